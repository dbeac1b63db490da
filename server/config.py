"""Process settings, read once from the environment (and SMSGW_CONFIG) into a frozen object.

Bad values fail fast with a message naming the variable.
"""

from __future__ import annotations

import base64
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.domain.batch_slots import SlotLimits
from server.domain.limits import RateLimitSettings
from server.domain.models import MessageStatus, UseType
from server.domain.otp_guard import GuardSettings
from server.domain.phones import check_region_code
from server.domain.verification import OtpSettings
from server.providers.loopback import OUTCOMES, LoopbackConfig
from server.routes_file import DEFAULT_ROUTING, RoutingConfig, RoutingConfigError, parse_routing
from server.tls import ServerTls, TlsConfigError
from server.tracing import TracingConfigError, mode_from_env

MAX_PROCESSES = 64  # SMSGW_PROCESSES


class ConfigError(ValueError):
    """A setting is missing or malformed."""


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return int(_float(env, name, default, low, high))


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or str(default)).lower()
    if raw not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw in ("1", "true", "yes")


def _prefixes(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of E.164 numbers or prefixes of them ("+86138,+15550100")."""
    entries = tuple(e.strip() for e in (env.get(name) or "").split(",") if e.strip())
    for entry in entries:
        if not entry.startswith("+") or not entry[1:].isdigit():
            raise ConfigError(f"{name} must list E.164 numbers or prefixes, got {entry!r}")
    return entries


def _secret_key(env: Mapping[str, str]) -> bytes | None:
    raw = env.get("SMSGW_SECRET_KEY")
    if not raw:
        return None
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError as exc:
        raise ConfigError("SMSGW_SECRET_KEY must be base64 (url-safe) of 32+ bytes") from exc
    if len(key) < 32:
        raise ConfigError("SMSGW_SECRET_KEY must decode to at least 32 bytes")
    return key


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of browser origins ("https://app.example.com") or "*"."""
    entries = tuple(e.strip().rstrip("/") for e in (env.get(name) or "").split(",") if e.strip())
    for entry in entries:
        scheme, sep, rest = entry.partition("://")
        if entry != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
            raise ConfigError(f"{name} must list origins (https://host[:port]) or *, got {entry!r}")
    return entries


def _region(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "")
    if not value:
        return None
    region = check_region_code(value)
    if region is None:
        raise ConfigError(f"{name} must be a two-letter region code (CN, US, ...), got {value!r}")
    return region


def _addr(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
    return value


# Tables of the SMSGW_CONFIG file that hold process settings: key -> variable. A
# variable set in the environment wins over the file.
TOML_TABLES: dict[str, dict[str, str]] = {
    "loopback": {
        "delivery_delay_ms": "SMSGW_LOOPBACK_DELAY_MS",
        "failure_rate": "SMSGW_LOOPBACK_FAILURE_RATE",
        "outcome": "SMSGW_LOOPBACK_OUTCOME",
        "max_bulk": "SMSGW_LOOPBACK_MAX_BULK",
        "latency_ms": "SMSGW_LOOPBACK_LATENCY_MS",
        "refused": "SMSGW_LOOPBACK_REFUSED",
        "inbound": "SMSGW_LOOPBACK_INBOUND",
    },
    "limits": {
        "global_send_per_second": "SMSGW_GLOBAL_SEND_RATE",
        "account_send_per_second": "SMSGW_ACCOUNT_SEND_RATE",
        "account_query_per_second": "SMSGW_ACCOUNT_QUERY_RATE",
        "burst_seconds": "SMSGW_RATE_BURST_SECONDS",
        "auth_failures_per_minute": "SMSGW_AUTH_FAILURES_PER_MINUTE",
        "mobile_interval_verification": "SMSGW_MOBILE_INTERVAL_VERIFICATION",
        "mobile_interval_notification": "SMSGW_MOBILE_INTERVAL_NOTIFICATION",
        "mobile_interval_marketing": "SMSGW_MOBILE_INTERVAL_MARKETING",
    },
}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = Path(".smsgw")
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    # The sms.v1 RPCs on the HTTP port (Connect, gRPC-Web), and the browser origins
    # allowed to call them (CORS; empty: none).
    http_rpc: bool = True
    http_cors_origins: tuple[str, ...] = ()
    config_file: Path | None = None
    pool_size: int = 10
    dispatch_workers: int = 2
    dispatch_claim_size: int = 100
    # Batch messages go through providers' bulk APIs where they have one (issue 15).
    dispatch_bulk: bool = True
    dispatch_urgent_workers: int = 1
    lease_seconds: float = 30.0
    max_attempts: int = 5
    retry_base_seconds: float = 1.0
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    loopback: LoopbackConfig = field(default_factory=LoopbackConfig)
    routing: RoutingConfig = DEFAULT_ROUTING
    retries_per_provider: int = 2
    message_ttl_seconds: float = 86_400.0
    breaker_failures: int = 10
    breaker_reset_seconds: float = 30.0
    breaker_window_seconds: float = 30.0
    breaker_failure_rate: float = 0.5
    breaker_probes: int = 3
    # A SENT message with no receipt by then is UNDELIVERED with NO_RECEIPT.
    receipt_deadline_seconds: float = 72 * 3600.0
    poll_interval_seconds: float = 2.0
    secret_key: bytes | None = field(default=None, repr=False)
    otp: OtpSettings = field(default_factory=OtpSettings)
    limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    # CreateBatch: batches of more than 1,000 numbers stored at once (server/domain/batch_slots.py).
    large_batches: SlotLimits = field(default_factory=SlotLimits)
    # SendMessage: seconds between two messages of a use type to one mobile (0: none).
    mobile_intervals: Mapping[UseType, float] = field(default_factory=dict)

    # --- TLS for the gRPC port (SMSGW_TLS_CERT/KEY, SMSGW_TLS_CLIENT_CA: mutual TLS).
    # PEM bytes read at start-up; never in a repr or a log. None: plaintext.
    tls: ServerTls | None = field(default=None, repr=False)
    # --- OpenTelemetry (SMSGW_TRACING: off, otlp, console; server/tracing.py).
    tracing: str = "off"
    # --- Server streams: events one resume may replay, streams open per account and
    # in this process (past them: FAILED_PRECONDITION / RESOURCE_EXHAUSTED).
    max_replay_events: int = 10_000
    max_streams_per_account: int = 100
    max_streams: int = 2_000
    # --- Webhooks: plain http and private addresses allowed (tests, development);
    # first retry delay (doubling, capped at an hour, with jitter) and how long an
    # event is retried before its delivery is FAILED; each request's timeout (a
    # delivery is leased for three: a replica that died leaves it to another then).
    webhook_allow_insecure: bool = False
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_for_seconds: float = 25 * 3600
    # --- Suppressions: the region a national number (no +) is read in (None: refused).
    default_region: str | None = None
    webhook_timeout_seconds: float = 10.0
    # Webhook delivery in a process of its own at this nice increment (lower CPU
    # priority than the send path), or in the gateway's (server/webhooks/process.py).
    webhook_process: bool = True
    webhook_nice: int = 10
    # --- Server processes sharing the gRPC and HTTP ports (SO_REUSEPORT): SMSGW_PROCESSES;
    # a process started by ``smsgw serve`` for them has its index (SMSGW_PROCESS_INDEX,
    # set by the parent only; None: not such a process) (server/processes.py).
    processes: int = 1
    process_index: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        config_file = Path(env["SMSGW_CONFIG"]) if env.get("SMSGW_CONFIG") else None
        file_values = _read_toml(config_file) if config_file else {}
        merged = dict(env)
        for table, keys in TOML_TABLES.items():
            values = file_values.get(table, {})
            unknown = sorted(set(values) - set(keys))
            if unknown:
                raise ConfigError(
                    f"{config_file}: [{table}] has unknown keys: {', '.join(unknown)}"
                )
            for key, env_name in keys.items():
                if key in values and env_name not in env:
                    merged[env_name] = str(values[key])
        outcome_name = merged.get("SMSGW_LOOPBACK_OUTCOME", "delivered").lower()
        if outcome_name not in OUTCOMES:
            raise ConfigError(
                f"SMSGW_LOOPBACK_OUTCOME must be one of {', '.join(OUTCOMES)}, got {outcome_name!r}"
            )
        try:
            routing = parse_routing(file_values, env)
        except RoutingConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from exc
        log_level = merged.get("SMSGW_LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("SMSGW_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        # --- TLS for the gRPC port.
        try:
            tls = ServerTls.from_env(merged)
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from exc
        try:
            tracing = mode_from_env(merged)
        except TracingConfigError as exc:
            raise ConfigError(str(exc)) from exc
        return cls(
            database_url=merged.get("DATABASE_URL") or None,
            data_dir=Path(merged.get("SMSGW_DATA_DIR") or ".smsgw"),
            grpc_addr=_addr(merged, "SMSGW_GRPC_ADDR", "127.0.0.1:50051"),
            http_addr=_addr(merged, "SMSGW_HTTP_ADDR", "127.0.0.1:8080"),
            http_rpc=_flag(merged, "SMSGW_HTTP_RPC", default=True),
            http_cors_origins=_origins(merged, "SMSGW_HTTP_CORS_ORIGINS"),
            config_file=config_file,
            pool_size=_int(merged, "SMSGW_POOL_SIZE", 10, 2, 200),
            dispatch_workers=_int(merged, "SMSGW_DISPATCH_WORKERS", 2, 0, 64),
            dispatch_claim_size=_int(merged, "SMSGW_DISPATCH_CLAIM_SIZE", 100, 1, 5000),
            dispatch_bulk=_flag(merged, "SMSGW_DISPATCH_BULK", default=True),
            dispatch_urgent_workers=_int(merged, "SMSGW_DISPATCH_URGENT_WORKERS", 1, 0, 16),
            lease_seconds=_float(merged, "SMSGW_LEASE_SECONDS", 30.0, 1.0, 3600.0),
            max_attempts=_int(merged, "SMSGW_MAX_ATTEMPTS", 5, 1, 100),
            retry_base_seconds=_float(merged, "SMSGW_RETRY_BASE_SECONDS", 1.0, 0.0, 600.0),
            shutdown_grace=_float(merged, "SMSGW_SHUTDOWN_GRACE", 10.0, 0.0, 600.0),
            log_level=log_level,
            routing=routing,
            retries_per_provider=_int(merged, "SMSGW_RETRIES_PER_PROVIDER", 2, 1, 100),
            message_ttl_seconds=_float(merged, "SMSGW_MESSAGE_TTL_SECONDS", 86_400, 1, 30 * 86_400),
            breaker_failures=_int(merged, "SMSGW_BREAKER_FAILURES", 10, 1, 100_000),
            breaker_reset_seconds=_float(merged, "SMSGW_BREAKER_RESET_SECONDS", 30, 0.01, 3600),
            breaker_window_seconds=_float(merged, "SMSGW_BREAKER_WINDOW_SECONDS", 30, 0.1, 3600),
            breaker_failure_rate=_float(merged, "SMSGW_BREAKER_FAILURE_RATE", 0.5, 0.01, 1.0),
            breaker_probes=_int(merged, "SMSGW_BREAKER_PROBES", 3, 1, 1000),
            receipt_deadline_seconds=_float(
                merged, "SMSGW_RECEIPT_DEADLINE_SECONDS", 72 * 3600, 1, 30 * 86_400
            ),
            poll_interval_seconds=_float(merged, "SMSGW_POLL_INTERVAL_SECONDS", 2, 0.05, 3600),
            secret_key=_secret_key(merged),
            webhook_allow_insecure=_flag(merged, "SMSGW_WEBHOOK_ALLOW_INSECURE"),
            default_region=_region(merged, "SMSGW_DEFAULT_REGION"),
            webhook_retry_base_seconds=_float(
                merged, "SMSGW_WEBHOOK_RETRY_BASE_SECONDS", 5.0, 0.01, 3600
            ),
            webhook_retry_for_seconds=_float(
                merged, "SMSGW_WEBHOOK_RETRY_FOR_SECONDS", 25 * 3600, 1, 30 * 86_400
            ),
            webhook_timeout_seconds=_float(merged, "SMSGW_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1, 300),
            webhook_process=_flag(merged, "SMSGW_WEBHOOK_PROCESS", True),
            webhook_nice=_int(merged, "SMSGW_WEBHOOK_NICE", 10, 0, 19),
            otp=OtpSettings(
                default_max_attempts=_int(merged, "SMSGW_OTP_MAX_ATTEMPTS", 3, 1, 100),
                mobile_interval_seconds=_float(
                    merged, "SMSGW_OTP_MOBILE_INTERVAL_SECONDS", 60, 0, 86_400
                ),
                account_per_hour=_int(merged, "SMSGW_OTP_ACCOUNT_PER_HOUR", 100, 0, 10_000_000),
                guard=GuardSettings(
                    prefix_limit=_int(merged, "SMSGW_OTP_PREFIX_LIMIT", 10, 0, 10_000_000),
                    prefix_window_seconds=_float(
                        merged, "SMSGW_OTP_PREFIX_WINDOW_SECONDS", 3600, 1, 86_400
                    ),
                    country_limit=_int(merged, "SMSGW_OTP_COUNTRY_LIMIT", 1000, 0, 10_000_000),
                    country_window_seconds=_float(
                        merged, "SMSGW_OTP_COUNTRY_WINDOW_SECONDS", 3600, 1, 86_400
                    ),
                    monitor_only=_flag(merged, "SMSGW_OTP_GUARD_MONITOR_ONLY"),
                ),
            ),
            limits=RateLimitSettings(
                global_send_per_second=_float(merged, "SMSGW_GLOBAL_SEND_RATE", 10_000, 0, 1e7),
                account_send_per_second=_float(merged, "SMSGW_ACCOUNT_SEND_RATE", 1000, 0, 1e7),
                account_query_per_second=_float(merged, "SMSGW_ACCOUNT_QUERY_RATE", 1000, 0, 1e7),
                burst_seconds=_float(merged, "SMSGW_RATE_BURST_SECONDS", 1.0, 0.01, 3600),
                auth_failures_per_minute=_int(
                    merged, "SMSGW_AUTH_FAILURES_PER_MINUTE", 10, 0, 1_000_000
                ),
            ),
            large_batches=SlotLimits(
                per_account=_int(merged, "SMSGW_LARGE_BATCHES_PER_ACCOUNT", 1, 1, 1000),
                per_server=_int(merged, "SMSGW_LARGE_BATCHES_PER_SERVER", 2, 1, 1000),
            ),
            mobile_intervals={
                use_type: _float(merged, f"SMSGW_MOBILE_INTERVAL_{use_type.name}", 0, 0, 86_400)
                for use_type in (UseType.VERIFICATION, UseType.NOTIFICATION, UseType.MARKETING)
            },
            loopback=LoopbackConfig(
                delivery_delay=_float(merged, "SMSGW_LOOPBACK_DELAY_MS", 1000, 0, 3_600_000) / 1000,
                failure_rate=_float(merged, "SMSGW_LOOPBACK_FAILURE_RATE", 0.0, 0.0, 1.0),
                outcome=OUTCOMES.get(outcome_name, MessageStatus.DELIVERED),
                max_bulk=_int(merged, "SMSGW_LOOPBACK_MAX_BULK", 1000, 1, 100_000),
                latency=_float(merged, "SMSGW_LOOPBACK_LATENCY_MS", 0, 0, 600_000) / 1000,
                refused=_prefixes(merged, "SMSGW_LOOPBACK_REFUSED"),
                inbound=_flag(merged, "SMSGW_LOOPBACK_INBOUND"),
            ),
            tls=tls,
            tracing=tracing,
            max_replay_events=_int(merged, "SMSGW_MAX_REPLAY_EVENTS", 10_000, 1, 10_000_000),
            max_streams_per_account=_int(
                merged, "SMSGW_MAX_STREAMS_PER_ACCOUNT", 100, 1, 1_000_000
            ),
            max_streams=_int(merged, "SMSGW_MAX_STREAMS", 2_000, 1, 1_000_000),
            processes=_int(merged, "SMSGW_PROCESSES", 1, 1, MAX_PROCESSES),
            process_index=(
                _int(merged, "SMSGW_PROCESS_INDEX", 0, 0, MAX_PROCESSES - 1)
                if merged.get("SMSGW_PROCESS_INDEX")
                else None
            ),
        )


def check_serve(settings: Settings) -> None:
    """Refuses to serve outside development without SMSGW_SECRET_KEY: with a
    DATABASE_URL set, a generated key would live in that database, next to the code
    hashes it keys, so a dump alone would recover the codes."""
    if settings.database_url and settings.secret_key is None:
        raise ConfigError(
            "SMSGW_SECRET_KEY must be set when DATABASE_URL is: without it the OTP key "
            "would be kept in the database itself (a dump would recover the codes). "
            "Generate one: python3 -c 'import secrets,base64;"
            "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'"
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"SMSGW_CONFIG names {path}, which does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"SMSGW_CONFIG file {path} is not valid TOML: {exc}") from exc

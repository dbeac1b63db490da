"""Providers and routes from the SMSGW_CONFIG TOML file, validated into frozen specs.

    [providers.sky]
    kind = "skynoo"           # skynoo | sendcloud | sendsms | twilio | http | smpp | loopback
    base_url = "https://api.skynoo.com"
    credentials = { api_key = "SKYNOO_KEY", api_secret = "SKYNOO_SECRET" }  # env var names
    rate_per_second = 50                  # outbound limit (aiolimiter); none if unset
    timeout_seconds = 10
    templates = { order_shipped = "15" }  # our template code -> provider template id

    [[routes]]
    prefixes = ["+86"]                    # E.164 prefixes; none means every number
    use_types = ["verification", "notification"]  # none means every use type
    providers = ["sky", "cloud"]          # failover order
    weights = [3, 1]                      # optional: share of first attempts

Secrets never appear in the file, only the names of the environment variables that
hold them; a missing variable stops the process with a message naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.inbound import ENGLISH, InboundConfig, KeywordLanguage
from server.domain.models import UseType

KINDS = ("skynoo", "sendcloud", "sendsms", "twilio", "http", "smpp", "loopback")
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "skynoo": ("api_key", "api_secret"),
    "sendcloud": ("sms_user", "sms_key"),
    "sendsms": ("client_id", "passcode"),
    "twilio": ("account_sid", "auth_token"),
    "smpp": ("system_id", "password"),  # docs/providers.md#smpp
    "loopback": (),
    # "http" (the declarative provider) names its own credentials: each one listed.
}
USE_TYPES = {
    "verification": UseType.VERIFICATION,
    "notification": UseType.NOTIFICATION,
    "marketing": UseType.MARKETING,
}


class RoutingConfigError(ValueError):
    """The providers/routes configuration is invalid; the message names the field."""


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str
    base_url: str = ""
    credentials: Mapping[str, str] = field(default_factory=dict)  # resolved values
    rate_per_second: float | None = None  # None: no outbound limit
    timeout_seconds: float = 10.0
    templates: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # provider-specific extras

    def __repr__(self) -> str:  # never print credential values
        return f"ProviderSpec(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


@dataclass(frozen=True)
class RouteSpec:
    providers: tuple[str, ...]
    prefixes: tuple[str, ...] = ()
    use_types: frozenset[UseType] = frozenset()
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class RoutingConfig:
    providers: tuple[ProviderSpec, ...]
    routes: tuple[RouteSpec, ...]
    # Price of one segment by ISO region ("*": every other country), in the smallest
    # currency unit: what a prepaid account is charged (issue 19).
    prices: Mapping[str, int] = field(default_factory=dict)
    # Keywords per language, the HELP replies and the owners of numbers (issue 20).
    inbound: InboundConfig = field(default_factory=InboundConfig)


DEFAULT_ROUTING = RoutingConfig(
    providers=(ProviderSpec(name="loopback", kind="loopback"),),
    routes=(RouteSpec(providers=("loopback",)),),
)

_PROVIDER_KEYS = {
    "kind",
    "base_url",
    "credentials",
    "rate_per_second",
    "timeout_seconds",
    "templates",
    "options",
}


def _number(where: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RoutingConfigError(f"{where} must be a number between {low} and {high}")
    return float(value)


def _provider(name: str, table: Any, env: Mapping[str, str]) -> ProviderSpec:
    where = f"providers.{name}"
    if not isinstance(table, dict):
        raise RoutingConfigError(f"{where} must be a table")
    unknown = set(table) - _PROVIDER_KEYS
    if unknown:
        raise RoutingConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    kind = table.get("kind")
    if kind not in KINDS:
        raise RoutingConfigError(f"{where}.kind must be one of {', '.join(KINDS)}")
    base_url = table.get("base_url", "")
    if kind == "smpp":
        if not (isinstance(base_url, str) and base_url.startswith("smpp://")):
            raise RoutingConfigError(f'{where}.base_url must be "smpp://HOST:PORT"')
    elif kind != "loopback" and not (
        isinstance(base_url, str) and base_url.startswith(("http://", "https://"))
    ):
        raise RoutingConfigError(f"{where}.base_url must be an http(s) URL")
    names = table.get("credentials", {})
    if not isinstance(names, dict):
        raise RoutingConfigError(f"{where}.credentials must be a table of env var names")
    credentials: dict[str, str] = {}
    for key in CREDENTIAL_FIELDS.get(kind, tuple(names)):
        var = names.get(key)
        if not isinstance(var, str) or not var:
            raise RoutingConfigError(f"{where}.credentials.{key} must name an environment variable")
        if not env.get(var):
            raise RoutingConfigError(
                f"{where}.credentials.{key}: environment variable {var} is not set"
            )
        credentials[key] = env[var]
    templates = table.get("templates", {})
    if not isinstance(templates, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int) for k, v in templates.items()
    ):
        raise RoutingConfigError(f"{where}.templates must map template codes to provider ids")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise RoutingConfigError(f"{where}.options must be a table")
    if kind == "http":
        # The declarative provider is all options: check them now, naming the key.
        from server.providers.generic_http_config import HttpProviderConfigError, parse_options

        try:
            parse_options(name, options, frozenset(credentials))
        except HttpProviderConfigError as exc:
            raise RoutingConfigError(str(exc)) from exc
    if kind == "smpp":
        from server.providers.smpp_config import SmppConfigError, parse_smpp

        try:
            parse_smpp(name, base_url, credentials, options)
        except SmppConfigError as exc:
            raise RoutingConfigError(str(exc)) from exc
    return ProviderSpec(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/") if isinstance(base_url, str) else "",
        credentials=credentials,
        rate_per_second=None
        if table.get("rate_per_second") is None
        else _number(f"{where}.rate_per_second", table["rate_per_second"], 0.01, 100_000),
        timeout_seconds=_number(
            f"{where}.timeout_seconds", table.get("timeout_seconds", 10), 0.05, 300
        ),
        templates={k: str(v) for k, v in templates.items()},
        options=dict(options),
    )


def _route(index: int, table: Any, known: set[str]) -> RouteSpec:
    where = f"routes[{index}]"
    if not isinstance(table, dict):
        raise RoutingConfigError(f"{where} must be a table")
    providers = table.get("providers")
    if not isinstance(providers, list) or not providers:
        raise RoutingConfigError(f"{where}.providers must be a non-empty list")
    for name in providers:
        if name not in known:
            raise RoutingConfigError(f"{where}.providers names unknown provider {name!r}")
    prefixes = table.get("prefixes", [])
    if not isinstance(prefixes, list) or not all(
        isinstance(p, str) and p.startswith("+") and p[1:].isdigit() for p in prefixes
    ):
        raise RoutingConfigError(f'{where}.prefixes must be E.164 prefixes like "+86"')
    use_types = table.get("use_types", [])
    if not isinstance(use_types, list) or not all(u in USE_TYPES for u in use_types):
        raise RoutingConfigError(f"{where}.use_types must be among {', '.join(USE_TYPES)}")
    weights = table.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(providers):
            raise RoutingConfigError(f"{where}.weights must give one weight per provider")
        weights = tuple(_number(f"{where}.weights", w, 0, 1_000_000) for w in weights)
        if not any(weights):
            raise RoutingConfigError(f"{where}.weights must not all be zero")
    return RouteSpec(
        providers=tuple(providers),
        prefixes=tuple(prefixes),
        use_types=frozenset(USE_TYPES[u] for u in use_types),
        weights=weights,
    )


def parse_routing(
    document: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> RoutingConfig:
    """Builds the routing config from a parsed TOML document (defaults: loopback only)."""
    env = os.environ if env is None else env
    prices = _prices(document.get("prices"))
    inbound = _inbound(document.get("inbound"))
    tables = document.get("providers")
    if tables is None:
        if document.get("routes"):
            raise RoutingConfigError("routes are given but no [providers.NAME] tables")
        return RoutingConfig(DEFAULT_ROUTING.providers, DEFAULT_ROUTING.routes, prices, inbound)
    if not isinstance(tables, dict) or not tables:
        raise RoutingConfigError("providers must hold at least one [providers.NAME] table")
    providers = tuple(_provider(name, table, env) for name, table in tables.items())
    known = {p.name for p in providers}
    raw_routes = document.get("routes")
    if raw_routes is None:
        routes: tuple[RouteSpec, ...] = (RouteSpec(providers=tuple(p.name for p in providers)),)
    elif not isinstance(raw_routes, list) or not raw_routes:
        raise RoutingConfigError("routes must be a non-empty array of [[routes]] tables")
    else:
        routes = tuple(_route(i, r, known) for i, r in enumerate(raw_routes))
    return RoutingConfig(providers, routes, prices, inbound)


MAX_PRICE = 1_000_000_000


def _prices(table: Any) -> dict[str, int]:
    """``[prices]``: ``CN = 4`` (a segment to China), ``"*" = 50`` (any other)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise RoutingConfigError("prices must be a table of REGION = price per segment")
    prices: dict[str, int] = {}
    for region, price in table.items():
        code = region.upper()
        if code != "*" and (len(code) != 2 or not code.isascii() or not code.isalpha()):
            raise RoutingConfigError(f'prices: {region!r} is not an ISO region or "*"')
        if isinstance(price, bool) or not isinstance(price, int) or not 0 <= price <= MAX_PRICE:
            raise RoutingConfigError(
                f"prices.{region} must be a whole number 0 to {MAX_PRICE} (smallest unit)"
            )
        prices[code] = price
    return prices


_KEYWORD_KINDS = ("stop", "start", "help")
_RECEIVING_NUMBER = re.compile(r"\+?[0-9]{3,15}")


def _words(where: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise RoutingConfigError(f"{where} must be a list of non-empty words")
    return frozenset(" ".join(w.split()).upper() for w in value)


def _inbound(table: Any) -> InboundConfig:
    """``[inbound]``: ``owners = { "+15005550006" = 1 }`` (the account that owns a
    number we receive on) and ``[inbound.languages.LANG]`` tables with ``stop``,
    ``start``, ``help`` (lists of words) and ``help_reply``. Without languages:
    English (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT; START, UNSTOP; HELP, INFO)."""
    if table is None:
        return InboundConfig()
    if not isinstance(table, dict):
        raise RoutingConfigError("inbound must be a table")
    unknown = sorted(set(table) - {"owners", "languages"})
    if unknown:
        raise RoutingConfigError(f"inbound has unknown keys: {', '.join(unknown)}")
    owners: dict[str, int] = {}
    raw_owners = table.get("owners", {})
    if not isinstance(raw_owners, dict):
        raise RoutingConfigError("inbound.owners must be a table of NUMBER = account id")
    for number, account in raw_owners.items():
        e164 = number.strip()
        if not _RECEIVING_NUMBER.fullmatch(e164):
            raise RoutingConfigError(
                f"inbound.owners: {number!r} is not an E.164 number or a short code"
            )
        if isinstance(account, bool) or not isinstance(account, int) or account <= 0:
            raise RoutingConfigError(f"inbound.owners.{number} must be an account id")
        owners[e164] = account
    raw_languages = table.get("languages")
    if raw_languages is None:
        return InboundConfig(owners=owners)
    if not isinstance(raw_languages, dict) or not raw_languages:
        raise RoutingConfigError("inbound.languages must hold [inbound.languages.LANG] tables")
    languages: dict[str, KeywordLanguage] = {}
    for code, spec in raw_languages.items():
        where = f"inbound.languages.{code}"
        if not isinstance(spec, dict):
            raise RoutingConfigError(f"{where} must be a table")
        unknown = sorted(set(spec) - {*_KEYWORD_KINDS, "help_reply"})
        if unknown:
            raise RoutingConfigError(f"{where} has unknown keys: {', '.join(unknown)}")
        default = ENGLISH if code == "en" else None
        words = {}
        for kind in _KEYWORD_KINDS:
            if kind in spec:
                words[kind] = _words(f"{where}.{kind}", spec[kind])
            else:
                words[kind] = getattr(default, kind) if default else frozenset()
        reply = spec.get("help_reply", default.help_reply if default else "")
        if not isinstance(reply, str) or len(reply) > 460:
            raise RoutingConfigError(f"{where}.help_reply must be text of at most 460 characters")
        languages[code] = KeywordLanguage(words["stop"], words["start"], words["help"], reply)
    return InboundConfig(languages=languages, owners=owners)

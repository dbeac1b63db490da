"""Pure pieces: retry policy, Basic parsing, IP allowlists, secrets, config, enums."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sms.v1 import common_pb2

from server.api.interceptors import peer_ip
from server.config import ConfigError, Settings
from server.dispatch.retry import RetryPolicy
from server.domain import models
from server.domain.api_keys import hash_secret, new_api_key, new_api_secret, verify_secret
from server.domain.auth import parse_basic, peer_allowed
from server.domain.errors import Unauthenticated
from server.store.outbox import Transition, _rounds


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=10.0)
    rng = random.Random(7)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 10.0)]:
        delays = [policy.delay(attempts, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8
    assert policy.should_retry(4) and not policy.should_retry(5)


def test_parse_basic() -> None:
    token = base64.b64encode(b"app_1:sec_2:with:colons").decode()
    assert parse_basic(f"Basic {token}") == ("app_1", "sec_2:with:colons")
    assert parse_basic(f"basic {token}") == ("app_1", "sec_2:with:colons")
    for bad in (
        None,
        "",
        "Basic",
        "Bearer x",
        "Basic ***",
        f"Basic {base64.b64encode(b'nocolon').decode()}",
    ):
        with pytest.raises(Unauthenticated):
            parse_basic(bad)


def test_peer_addresses_and_allowlists() -> None:
    assert peer_ip("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert peer_ip("ipv6:[::1]:5000") == "::1"
    assert peer_ip("ipv6:%5B::1%5D:5000") == "::1"  # as grpcio 1.6x writes it
    assert peer_ip("ipv6:%5Bfe80::1%25eth0%5D:5000") == "fe80::1%eth0"
    assert peer_ip("unix:/tmp/x") is None
    credential = models.Credential(
        1, 1, "k", "h", ("10.0.0.0/8", "2001:db8::/32"), datetime.now(UTC), None
    )
    assert peer_allowed(credential, "10.1.2.3")
    assert peer_allowed(credential, "2001:db8::5")
    assert not peer_allowed(credential, "127.0.0.1")
    assert not peer_allowed(credential, None)


def test_secrets_hash_and_verify() -> None:
    secret = new_api_secret()
    stored = hash_secret(secret)
    assert secret not in stored
    assert verify_secret(secret, stored)
    assert not verify_secret(secret + "x", stored)
    assert not verify_secret(secret, "garbage")
    assert hash_secret(secret) != stored, "salted"
    assert new_api_key().startswith("app_") and new_api_key() != new_api_key()


def test_settings_from_env_and_toml(tmp_path: Path) -> None:
    config = tmp_path / "smsgw.toml"
    config.write_text('[loopback]\ndelivery_delay_ms = 250\noutcome = "rejected"\n')
    settings = Settings.from_env({"SMSGW_CONFIG": str(config), "SMSGW_GRPC_ADDR": "0.0.0.0:9"})
    assert settings.loopback.delivery_delay == 0.25
    assert settings.loopback.outcome == models.MessageStatus.REJECTED
    assert settings.grpc_addr == "0.0.0.0:9"
    assert settings.database_url is None
    for env in (
        {"SMSGW_GRPC_ADDR": "nope"},
        {"SMSGW_LOOPBACK_FAILURE_RATE": "2"},
        {"SMSGW_POOL_SIZE": "many"},
        {"SMSGW_LOOPBACK_OUTCOME": "lost"},
        {"SMSGW_CONFIG": str(tmp_path / "missing.toml")},
        {"SMSGW_PROCESSES": "0"},
        {"SMSGW_PROCESSES": "65"},
    ):
        with pytest.raises(ConfigError):
            Settings.from_env(env)


def test_processes_setting() -> None:
    assert Settings.from_env({}).processes == 1
    assert Settings.from_env({}).process_index is None  # not started by a parent
    two = Settings.from_env({"SMSGW_PROCESSES": "2", "SMSGW_PROCESS_INDEX": "1"})
    assert (two.processes, two.process_index) == (2, 1)


@pytest.mark.parametrize(
    ("domain_enum", "proto_enum", "prefix"),
    [
        (models.UseType, common_pb2.UseType, "USE_TYPE_"),
        (models.MessageStatus, common_pb2.MessageStatus, "MESSAGE_STATUS_"),
        (models.VerificationState, common_pb2.VerificationState, "VERIFICATION_STATE_"),
        (models.BatchStatus, common_pb2.BatchStatus, "BATCH_STATUS_"),
        (models.Channel, common_pb2.Channel, "CHANNEL_"),
    ],
)
def test_domain_enums_match_the_proto_numbers(
    domain_enum: type, proto_enum: object, prefix: str
) -> None:
    proto_values = {name.removeprefix(prefix): number for name, number in proto_enum.items()}  # type: ignore[attr-defined]
    assert proto_values == {m.name: m.value for m in domain_enum}  # type: ignore[attr-defined]


def test_transitions_for_one_message_are_split_into_ordered_rounds() -> None:
    a_sent = Transition("a", models.MessageStatus.SENT)
    a_done = Transition("a", models.MessageStatus.DELIVERED)
    b_sent = Transition("b", models.MessageStatus.SENT)
    assert _rounds([a_sent, b_sent, a_done]) == [[a_sent, b_sent], [a_done]]


def test_unknown_proto_enum_numbers_become_the_unknown_value() -> None:
    from server.api.convert import enum_value

    assert enum_value(models.UseType, 3, models.UseType.UNSPECIFIED) == models.UseType.MARKETING
    assert enum_value(models.UseType, 99, models.UseType.UNSPECIFIED) == models.UseType.UNSPECIFIED
    assert enum_value(models.Channel, 2, models.Channel.UNSPECIFIED) == models.Channel.VOICE

"""``Verifications`` (server/domain/verification.py) on in-memory fakes of its ports:
every branch of ``send`` and ``check`` in milliseconds. The wiring through gRPC and
PostgreSQL is tested end to end in tests/e2e/test_verification*.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from server.domain.codes import CodeKeys
from server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from server.domain.messaging import Caller
from server.domain.models import (
    CODE_MARK,
    Channel,
    Priority,
    UseType,
    VerificationState,
)
from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings, SendVerificationCommand, Verifications
from tests.fakes import (
    FakeClock,
    FakeRoutes,
    InMemoryMessages,
    InMemoryTemplates,
    InMemoryVerifications,
)

MOBILE = "+8613800138000"
CALLER = Caller(account_id=1, verified=True)
CODES = CodeKeys(b"unit-test-server-key-of-32-bytes!!")
# No interval and no counters unless a test asks for them.
PLAIN_EXPIRY = timedelta(minutes=5)
PLAIN = OtpSettings(mobile_interval_seconds=0, account_per_hour=0, guard=GuardSettings(0, 60, 0))


@dataclass
class World:
    clock: FakeClock
    messages: InMemoryMessages
    store: InMemoryVerifications
    templates: InMemoryTemplates
    routes: FakeRoutes
    verifications: Verifications
    accepted: list[None]


def world(settings: OtpSettings = PLAIN, routes: FakeRoutes | None = None) -> World:
    clock = FakeClock()
    messages = InMemoryMessages(clock)
    store = InMemoryVerifications(messages)
    templates = InMemoryTemplates(clock)
    routes = routes or FakeRoutes()
    accepted: list[None] = []
    verifications = Verifications(
        store,
        templates,
        CODES,
        settings,
        routes=routes,
        clock=clock,
        on_accepted=lambda: accepted.append(None),
    )
    return World(clock, messages, store, templates, routes, verifications, accepted)


def send(mobile: str = MOBILE, **fields: object) -> SendVerificationCommand:
    return SendVerificationCommand(mobile=mobile, **fields)  # type: ignore[arg-type]


def fields_of(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


async def test_a_code_is_stored_only_hashed_and_sealed() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(code="482913"))
    row = w.store.rows[sent.verify_id]
    message = w.messages.rows[sent.message_id].message
    # The message holds a mark where the code goes, and the code sealed.
    assert "482913" not in message.body and CODE_MARK in message.body
    assert message.sealed_code is not None and CODES.unseal(message.sealed_code) == "482913"
    assert row.verification.code_hash == CODES.digest(sent.verify_id, "482913")
    assert message.priority == Priority.VERIFICATION
    assert message.use_type == UseType.VERIFICATION and message.channel == Channel.SMS
    assert sent.expire_time == w.clock.now + PLAIN_EXPIRY
    assert len(w.accepted) == 1


async def test_a_generated_code_has_the_length_asked() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(code_length=8))
    sealed = w.messages.rows[sent.message_id].message.sealed_code
    assert sealed is not None
    code = CODES.unseal(sealed)
    assert code is not None and len(code) == 8 and code.isdigit()
    assert w.store.rows[sent.verify_id].verification.code_hash == CODES.digest(sent.verify_id, code)


async def test_the_default_text_says_when_the_code_expires() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(expire_minutes=10))
    message = w.messages.rows[sent.message_id].message
    assert message.body == f"Your verification code is {CODE_MARK}. It expires in 10 minutes."
    assert sent.expire_time == w.clock.now + 2 * PLAIN_EXPIRY


async def test_every_bad_field_is_named_and_nothing_is_stored() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.verifications.send(
            CALLER,
            send(
                "12345",
                code_length=9,
                expire_minutes=61,
                scene="\x00",
                code="12a4",
                channel=7,
                request_id="r" * 129,
            ),
        )
    assert fields_of(caught.value) == {
        "mobile",
        "code_length",
        "expire_minutes",
        "scene",
        "code",
        "channel",
        "request_id",
    }
    assert not w.store.rows and not w.messages.rows and not w.accepted


async def test_a_code_length_that_contradicts_the_code_is_refused() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.verifications.send(CALLER, send(code="1234", code_length=6))
    assert fields_of(caught.value) == {"code_length"}


async def test_voice_needs_a_provider_that_places_calls() -> None:
    w = world()
    with pytest.raises(FailedPrecondition) as caught:
        await w.verifications.send(CALLER, send(channel=Channel.VOICE))
    assert caught.value.reason == "VOICE_UNAVAILABLE"
    w = world(routes=FakeRoutes(voice=True))
    sent = await w.verifications.send(CALLER, send(channel=Channel.VOICE))
    assert w.messages.rows[sent.message_id].message.channel == Channel.VOICE
    assert w.store.rows[sent.verify_id].verification.channel == Channel.VOICE


async def test_no_route_for_the_code_stores_nothing_and_routes_see_the_real_code() -> None:
    w = world(routes=FakeRoutes(lambda m: False))
    with pytest.raises(FailedPrecondition) as caught:
        await w.verifications.send(CALLER, send(code="5555"))
    assert caught.value.reason == "NO_ROUTE"
    assert not w.store.rows and not w.messages.rows
    [asked] = w.routes.asked
    assert asked.code == "5555" and "5555" in asked.body and CODE_MARK not in asked.body


async def test_a_country_outside_the_allowlist_is_refused_unless_monitoring() -> None:
    us_only = Caller(account_id=1, verified=True, otp_allowed_regions=frozenset({"US"}))
    w = world()
    with pytest.raises(PermissionDenied) as caught:
        await w.verifications.send(us_only, send())
    assert caught.value.reason == "COUNTRY_NOT_ALLOWED"
    assert not w.store.rows
    monitoring = OtpSettings(
        mobile_interval_seconds=0, account_per_hour=0, guard=GuardSettings(0, 60, 0, 60, True)
    )
    w = world(monitoring)
    await w.verifications.send(us_only, send())
    assert len(w.store.rows) == 1


async def test_a_template_renders_the_mark_and_the_minutes() -> None:
    w = world()
    t = await w.templates.create(
        1, "otp", "Code #code#, valid #minutes# min", UseType.VERIFICATION, ["code", "minutes"]
    )
    sent = await w.verifications.send(CALLER, send(template_id=t.id, expire_minutes=3))
    message = w.messages.rows[sent.message_id].message
    assert message.body == f"Code {CODE_MARK}, valid 3 min"
    assert message.template_code == "otp"
    assert message.template_data == {"code": CODE_MARK, "minutes": "3"}


async def test_a_template_must_hold_the_code_and_only_known_values() -> None:
    w = world()
    no_code = await w.templates.create(1, "a", "Hello", UseType.VERIFICATION, [])
    other = await w.templates.create(
        1, "b", "#code# for #name#", UseType.VERIFICATION, ["code", "name"]
    )
    for template_id in (no_code.id, other.id):
        with pytest.raises(InvalidArgument) as caught:
            await w.verifications.send(CALLER, send(template_id=template_id))
        assert fields_of(caught.value) == {"template_id"}
    with pytest.raises(NotFound) as missing:
        await w.verifications.send(CALLER, send(template_id=999))
    assert missing.value.reason == "TEMPLATE_NOT_FOUND"
    assert not w.store.rows


async def test_one_code_per_mobile_per_interval() -> None:
    w = world(OtpSettings(mobile_interval_seconds=60, account_per_hour=0, guard=PLAIN.guard))
    await w.verifications.send(CALLER, send())
    w.clock.advance(15)
    with pytest.raises(ResourceExhausted) as caught:
        await w.verifications.send(CALLER, send())
    assert caught.value.reason == "MOBILE_INTERVAL"
    assert caught.value.retry_after == pytest.approx(45.0)
    w.clock.advance(45)
    await w.verifications.send(CALLER, send())
    assert len(w.store.rows) == 2


async def test_the_account_hourly_limit_refuses_and_a_refusal_is_not_counted() -> None:
    w = world(OtpSettings(mobile_interval_seconds=0, account_per_hour=2, guard=PLAIN.guard))
    await w.verifications.send(CALLER, send())
    await w.verifications.send(CALLER, send("+8613900139000"))
    for _ in range(3):
        with pytest.raises(ResourceExhausted) as caught:
            await w.verifications.send(CALLER, send("+8613700137000"))
        assert caught.value.reason == "ACCOUNT_HOURLY_LIMIT"
        assert 1 <= caught.value.retry_after <= 3600
    assert len(w.store.rows) == 2
    # Refused sends left the count at 2, not 5; another account has its own hour.
    await w.verifications.send(Caller(account_id=2, verified=True), send())
    assert sorted(w.store.velocity.counts.values()) == [1, 2]


async def test_the_pumping_guard_refuses_a_busy_prefix_unless_monitoring() -> None:
    guard = GuardSettings(prefix_limit=2, prefix_window_seconds=3600, country_limit=0)
    w = world(OtpSettings(mobile_interval_seconds=0, account_per_hour=0, guard=guard))
    for last in ("0001", "0002"):
        await w.verifications.send(CALLER, send("+861380013" + last))
    with pytest.raises(ResourceExhausted) as caught:
        await w.verifications.send(CALLER, send("+8613800130003"))
    assert caught.value.reason == "PREFIX_VELOCITY"
    # Another prefix passes.
    await w.verifications.send(CALLER, send("+8613900130003"))
    assert len(w.store.rows) == 3
    monitored = GuardSettings(2, 3600, 0, 3600, monitor_only=True)
    w = world(OtpSettings(mobile_interval_seconds=0, account_per_hour=0, guard=monitored))
    for last in ("0001", "0002", "0003"):
        await w.verifications.send(CALLER, send("+861380013" + last))
    assert len(w.store.rows) == 3


async def test_a_repeated_request_id_answers_the_first_verification() -> None:
    w = world()
    first = await w.verifications.send(CALLER, send(request_id="r-1", code="1234"))
    again = await w.verifications.send(CALLER, send(request_id="r-1", code="1234"))
    assert again == first and len(w.store.rows) == 1 and len(w.messages.rows) == 1
    with pytest.raises(FailedPrecondition) as caught:
        await w.verifications.send(CALLER, send(request_id="r-1", code="9999"))
    assert caught.value.reason == "REQUEST_ID_REUSED"


async def test_the_account_attempts_setting_overrides_the_default() -> None:
    w = world()
    five = Caller(account_id=1, verified=True, otp_max_attempts=5)
    sent = await w.verifications.send(five, send())
    default = await w.verifications.send(CALLER, send("+8613900139000"))
    assert w.store.rows[sent.verify_id].attempts_left == 5
    assert w.store.rows[default.verify_id].attempts_left == PLAIN.default_max_attempts


async def test_check_a_right_code_once() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(code="2468"))
    checked = await w.verifications.check(CALLER, sent.verify_id, MOBILE, "2468")
    assert (checked.valid, checked.state) == (True, VerificationState.VERIFIED)
    with pytest.raises(FailedPrecondition) as caught:
        await w.verifications.check(CALLER, sent.verify_id, MOBILE, "2468")
    assert caught.value.reason == "CODE_ALREADY_USED"


async def test_check_wrong_codes_use_attempts_until_exhausted() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(code="2468"))
    lefts = []
    for _ in range(3):
        checked = await w.verifications.check(CALLER, sent.verify_id, MOBILE, "1111")
        assert not checked.valid
        lefts.append((checked.remaining_attempts, checked.state))
    assert lefts == [
        (2, VerificationState.PENDING),
        (1, VerificationState.PENDING),
        (0, VerificationState.EXHAUSTED),
    ]
    with pytest.raises(FailedPrecondition) as caught:
        await w.verifications.check(CALLER, sent.verify_id, MOBILE, "2468")
    assert caught.value.reason == "CODE_EXHAUSTED"


async def test_check_after_expiry_is_refused() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(code="2468", expire_minutes=1))
    w.clock.advance(60)
    with pytest.raises(FailedPrecondition) as caught:
        await w.verifications.check(CALLER, sent.verify_id, MOBILE, "2468")
    assert caught.value.reason == "CODE_EXPIRED"


async def test_check_with_another_mobile_or_account_is_not_found() -> None:
    w = world()
    sent = await w.verifications.send(CALLER, send(code="2468"))
    for caller, mobile in ((CALLER, "+8613900139000"), (Caller(2, True), MOBILE)):
        with pytest.raises(NotFound) as caught:
            await w.verifications.check(caller, sent.verify_id, mobile, "2468")
        assert caught.value.reason == "VERIFICATION_NOT_FOUND"
    # Those checks used no attempt.
    assert w.store.rows[sent.verify_id].attempts_left == PLAIN.default_max_attempts


async def test_check_names_each_bad_field() -> None:
    w = world()
    with pytest.raises(InvalidArgument) as caught:
        await w.verifications.check(CALLER, "", "12", "12x")
    assert fields_of(caught.value) == {"verify_id", "mobile", "code"}

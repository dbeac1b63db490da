"""VerificationService end to end: codes reach the handset, every state and answer of
the contract, races, limits across servers, the SMS-pumping guard."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sms.v1 import common_pb2, message_pb2, template_pb2, verification_pb2

from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings
from server.emulators.common import RunningEmulator
from server.store.accounts import PgAccountStore
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.emulated import cloud, only, sky, start_sendcloud, start_skynoo
from tests.e2e.errors import bad_fields, details, reason

CN = "+8613800138000"
S = common_pb2


def otp(**changes: object) -> OtpSettings:
    """Test defaults: no per-mobile wait and no guard unless a test asks for them."""
    base = {"mobile_interval_seconds": 0.0, "guard": GuardSettings(prefix_limit=0, country_limit=0)}
    return OtpSettings(**{**base, **changes})  # type: ignore[arg-type]


async def send(
    client: Client, mobile: str = CN, **fields: object
) -> verification_pb2.SendVerificationResponse:
    return await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=mobile, **fields),  # type: ignore[arg-type]
        metadata=client.metadata,
    )


async def check(
    client: Client, verify_id: str, code: str, mobile: str = CN
) -> verification_pb2.CheckVerificationResponse:
    return await client.verifications.CheckVerification(
        verification_pb2.CheckVerificationRequest(verify_id=verify_id, mobile=mobile, code=code),
        metadata=client.metadata,
    )


def retry_seconds(err: grpc.aio.AioRpcError) -> float:
    for item in details(err).details:
        if item.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            item.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    raise AssertionError("no RetryInfo")


@pytest.fixture(scope="module")
async def otp_gw(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(otp=otp())


async def test_a_generated_code_reaches_the_handset_verifies_once_and_is_never_stored(
    start_gateway: GatewayFactory,
    emulators: list[RunningEmulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = await start_skynoo(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=only(sky(emulator)), otp=otp(), retry_base_seconds=0.05)
    client = await running.client()
    before = time.time()
    sent = await send(client, scene="login")
    assert sent.verify_id.startswith("v_") and sent.message_id
    assert before + 299 <= sent.expire_time.seconds <= time.time() + 301

    await wait_for(lambda: _received(emulator))
    text = emulator.state.received[0].content
    match = re.fullmatch(r"Your verification code is (\d{6})\. It expires in 5 minutes\.", text)
    assert match, text
    code = match.group(1)

    # Only a keyed hash is stored; the sealed copy is gone once SENT is recorded
    # (the emulator sees the message a moment before the dispatcher records it).
    async def recorded_sent() -> bool:
        status = await running.gateway.pool.fetchval(
            "SELECT status FROM messages WHERE id = $1", sent.message_id
        )
        return bool(status >= S.MESSAGE_STATUS_SENT)

    await wait_for(recorded_sent)
    rows = await running.gateway.pool.fetch(
        "SELECT v.code_hash, m.body, m.sealed_code FROM verifications v "
        "JOIN messages m ON m.id = v.message_id WHERE v.id = $1",
        sent.verify_id,
    )
    assert code not in rows[0]["body"] and code.encode() not in bytes(rows[0]["code_hash"])
    assert rows[0]["sealed_code"] is None
    dump = await running.gateway.pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM verifications) t"
    )
    assert code not in dump

    ok = await check(client, sent.verify_id, code)
    assert (ok.valid, ok.remaining_attempts, ok.state) == (True, 0, S.VERIFICATION_STATE_VERIFIED)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await check(client, sent.verify_id, code)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert again.value.details() == "verification code already used"
    assert all(code not in r.getMessage() for r in caplog.records)


async def _received(emulator: RunningEmulator) -> bool:
    return bool(emulator.state.received)


async def test_wrong_codes_count_down_then_exhaust(otp_gw: Running) -> None:
    client = await otp_gw.client()
    sent = await send(client, code="4711")
    answers = [await check(client, sent.verify_id, "0000") for _ in range(3)]
    assert [(a.valid, a.remaining_attempts, a.state) for a in answers] == [
        (False, 2, S.VERIFICATION_STATE_PENDING),
        (False, 1, S.VERIFICATION_STATE_PENDING),
        (False, 0, S.VERIFICATION_STATE_EXHAUSTED),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(client, sent.verify_id, "4711")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "verification code exhausted"


async def test_attempts_are_configurable_per_account(otp_gw: Running) -> None:
    client = await otp_gw.client()
    store = PgAccountStore(otp_gw.gateway.pool)
    assert await store.update_otp_settings(client.account_id, max_attempts=5, set_attempts=True)
    await asyncio.sleep(1.1)  # the credential cache re-reads the account within a second
    sent = await send(client, code="4711")
    assert (await check(client, sent.verify_id, "0000")).remaining_attempts == 4


async def test_an_expired_code_is_refused_and_stays_expired(otp_gw: Running) -> None:
    client = await otp_gw.client()
    sent = await send(client, code="4711", expire_minutes=1)
    await otp_gw.gateway.pool.execute(
        "UPDATE verifications SET expires_at = now() - interval '1 second' WHERE id = $1",
        sent.verify_id,
    )
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(client, sent.verify_id, "4711")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == "verification code expired"
    state = await otp_gw.gateway.pool.fetchval(
        "SELECT state FROM verifications WHERE id = $1", sent.verify_id
    )
    assert state == S.VERIFICATION_STATE_EXPIRED


async def test_unknown_id_other_mobile_or_other_account_is_not_found(otp_gw: Running) -> None:
    alice, bob = await otp_gw.client(), await otp_gw.client()
    sent = await send(alice, code="4711")
    for client, verify_id, mobile in (
        (alice, "v_nope", CN),
        (alice, sent.verify_id, "+8613900139000"),
        (bob, sent.verify_id, CN),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(client, verify_id, "4711", mobile)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await check(alice, sent.verify_id, "4711")).valid


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"code_length": 3}, {"code_length"}),
        ({"code_length": 9}, {"code_length"}),
        ({"expire_minutes": 61}, {"expire_minutes"}),
        ({"code": "12a4"}, {"code"}),
        ({"code": "1234", "code_length": 6}, {"code_length"}),
        ({"scene": "x" * 65}, {"scene"}),
        ({"request_id": "r" * 129}, {"request_id"}),
    ],
)
async def test_bad_requests_name_each_field(
    otp_gw: Running, fields: dict[str, Any], bad: set[str]
) -> None:
    client = await otp_gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == bad
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(client, "", "12 34", "138")
    assert bad_fields(caught.value) == {"verify_id", "mobile", "code"}


async def test_concurrent_checks_succeed_once_and_never_exceed_the_attempts(
    otp_gw: Running,
) -> None:
    client = await otp_gw.client()
    right = await send(client, code="4711")
    results = await asyncio.gather(
        *(check(client, right.verify_id, "4711") for _ in range(20)), return_exceptions=True
    )
    valid = [r for r in results if isinstance(r, verification_pb2.CheckVerificationResponse)]
    assert len(valid) == 1 and valid[0].valid
    assert all(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.FAILED_PRECONDITION
        for r in results
        if r is not valid[0]
    )

    wrong = await send(client, code="4711")
    results = await asyncio.gather(
        *(check(client, wrong.verify_id, "0000") for _ in range(20)), return_exceptions=True
    )
    answered = [r for r in results if isinstance(r, verification_pb2.CheckVerificationResponse)]
    assert sorted(a.remaining_attempts for a in answered) == [0, 1, 2]
    assert sum(isinstance(r, grpc.aio.AioRpcError) for r in results) == 17
    left = await otp_gw.gateway.pool.fetchval(
        "SELECT attempts_left FROM verifications WHERE id = $1", wrong.verify_id
    )
    assert left == 0


async def test_request_id_returns_the_first_verification(otp_gw: Running) -> None:
    client = await otp_gw.client()
    first = await send(client, code="4711", request_id="signup-1")
    again = await send(client, code="4711", request_id="signup-1")
    assert (again.verify_id, again.message_id) == (first.verify_id, first.message_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, code="9999", request_id="signup-1")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_templates_must_hold_the_code_and_render_it(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=only(sky(emulator)), otp=otp(), retry_base_seconds=0.05)
    client = await running.client()

    async def template(code: str, content: str) -> int:
        created = await client.templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    code=code, content=content, use_type=S.USE_TYPE_VERIFICATION
                )
            ),
            metadata=client.metadata,
        )
        return created.id

    good = await template("login", "Login code #code#, valid #minutes# min.")
    await send(client, code="246810", template_id=good, expire_minutes=3)
    await wait_for(lambda: _received(emulator))
    assert emulator.state.received[0].content == "Login code 246810, valid 3 min."
    no_code = await template("plain", "Hello there")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, "+8613900139000", template_id=no_code)
    assert bad_fields(caught.value) == {"template_id"}


async def test_voice_needs_a_provider_that_can_call(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator], otp_gw: Running
) -> None:
    client = await otp_gw.client()  # loopback places (pretend) calls
    assert (await send(client, channel=S.CHANNEL_VOICE, code="1234")).verify_id
    emulator = await start_skynoo(emulators)
    text_only = await start_gateway(routing=only(sky(emulator)), otp=otp())
    other = await text_only.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(other, channel=S.CHANNEL_VOICE)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "VOICE_UNAVAILABLE"


async def test_the_verification_sms_is_sent_first(otp_gw: Running) -> None:
    client = await otp_gw.client()
    sent = await send(client, code="4711")
    state = await otp_gw.gateway.pool.fetchrow(
        "SELECT priority, use_type FROM messages WHERE id = $1", sent.message_id
    )
    assert state is not None
    assert (state["priority"], state["use_type"]) == (0, S.USE_TYPE_VERIFICATION)
    reply = await client.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[sent.message_id]), metadata=client.metadata
    )
    assert reply.messages[0].to_number == CN


async def test_a_voice_code_is_placed_through_sendcloud_send_voice(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_sendcloud(emulators, delivery_delay=0.1)
    running = await start_gateway(routing=only(cloud(emulator)), otp=otp(), retry_base_seconds=0.05)
    client = await running.client()
    sent = await send(client, channel=S.CHANNEL_VOICE, code="4711")
    await final_state(client, sent.message_id)  # SENT recorded, then DELIVERED
    assert "4711" in emulator.state.received[0].content
    state = await running.gateway.pool.fetchrow(
        "SELECT provider, channel, sealed_code FROM messages WHERE id = $1", sent.message_id
    )
    assert state is not None
    assert (state["provider"], state["channel"], state["sealed_code"]) == ("cloud", 2, None)
    # A text code cannot go there (SendCloud sends templates only, none is mapped):
    # routing knows it at the call, so the call is refused and nothing is stored.
    stored = await running.gateway.pool.fetchval("SELECT count(*) FROM messages")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, "+8613900139000", code="4711")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "NO_ROUTE"
    assert await running.gateway.pool.fetchval("SELECT count(*) FROM messages") == stored

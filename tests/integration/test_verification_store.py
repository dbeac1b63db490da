"""PgVerificationStore.create on a real PostgreSQL: a mobile the account suppressed for
verification codes is refused by the statement that stores the verification (no round
trip of its own), on the one-statement path and the transactional one, and nothing of
the refused send remains; a suppression for other use types does not hold codes back."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from server.domain.errors import FailedPrecondition
from server.domain.models import NewMessage, Priority, UseType, VerificationState
from server.domain.ports import IdempotencyKey
from server.domain.suppression import SuppressionReason
from server.domain.verification import CheckResult, NewVerification
from server.store.accounts import PgAccountStore
from server.store.suppressions import PgSuppressionStore
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from tests.integration.builders import new_message

SUPPRESSED, NOTIFICATIONS_ONLY = "+8613800138001", "+8613800138002"


def attempt(account_id: int, mobile: str) -> tuple[NewVerification, NewMessage]:
    message = replace(
        new_message(account_id, Priority.VERIFICATION),
        to_number=mobile,
        use_type=UseType.VERIFICATION,
        sealed_code=b"sealed",
    )
    verification = NewVerification(
        id="v_" + secrets.token_hex(12),
        account_id=account_id,
        mobile=mobile,
        scene="",
        channel=1,
        code_hash=b"hash",
        attempts=3,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    return verification, message


async def stored(pool: asyncpg.Pool, account_id: int) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM verifications WHERE account_id = $1) AS v, "
        "(SELECT count(*) FROM messages WHERE account_id = $1) AS m",
        account_id,
    )
    assert row is not None
    return int(row["v"]), int(row["m"])


@pytest.mark.parametrize("keyed", [False, True], ids=["one statement", "transaction"])
async def test_a_suppressed_mobile_is_refused_and_nothing_is_stored(
    pool: asyncpg.Pool, keyed: bool
) -> None:
    account_id = (await PgAccountStore(pool).create_account("otp-supp", verified=True)).id
    suppressions = PgSuppressionStore(pool)
    await suppressions.add(
        account_id, [SUPPRESSED], SuppressionReason.MANUAL, [UseType.VERIFICATION]
    )
    await suppressions.add(
        account_id, [NOTIFICATIONS_ONLY], SuppressionReason.MANUAL, [UseType.NOTIFICATION]
    )
    store = PgVerificationStore(pool, PgVelocityCounters(pool))

    def key(n: int) -> IdempotencyKey | None:
        return IdempotencyKey(account_id, "SendVerification", f"r{n}", b"h") if keyed else None

    verification, message = attempt(account_id, SUPPRESSED)
    with pytest.raises(FailedPrecondition) as refused:
        await store.create(
            verification,
            message,
            mobile_interval=0,
            checks=[],
            judge=lambda results: None,
            key=key(1),
        )
    assert refused.value.reason == "RECIPIENT_SUPPRESSED"
    assert await stored(pool, account_id) == (0, 0)

    verification, message = attempt(account_id, NOTIFICATIONS_ONLY)
    made = await store.create(
        verification,
        message,
        mobile_interval=0,
        checks=[],
        judge=lambda results: None,
        key=key(2),
    )
    assert made.id == verification.id
    assert await stored(pool, account_id) == (1, 1)
    row = await pool.fetchrow(
        "SELECT v.mobile, v.state, m.to_number FROM verifications v "
        "JOIN messages m ON m.id = v.message_id WHERE v.id = $1",
        verification.id,
    )
    assert row is not None and row["mobile"] == row["to_number"] == NOTIFICATIONS_ONLY


async def test_concurrent_sends_are_stored_together_and_each_answered_for_itself(
    pool: asyncpg.Pool,
) -> None:
    """Sends of the one-statement path that arrive together are group-committed: every
    stored one has its verification and message, every suppressed one is refused alone."""
    account_id = (await PgAccountStore(pool).create_account("otp-group", verified=True)).id
    await PgSuppressionStore(pool).add(
        account_id, [SUPPRESSED], SuppressionReason.MANUAL, [UseType.VERIFICATION]
    )
    store = PgVerificationStore(pool, PgVelocityCounters(pool))
    attempts = [
        attempt(account_id, SUPPRESSED if n % 5 == 0 else f"+86139{n:08d}") for n in range(60)
    ]
    results = await asyncio.gather(
        *(
            store.create(v, m, mobile_interval=0, checks=[], judge=lambda results: None)
            for v, m in attempts
        ),
        return_exceptions=True,
    )
    for (verification, _), result in zip(attempts, results, strict=True):
        if verification.mobile == SUPPRESSED:
            assert isinstance(result, FailedPrecondition)
            assert result.reason == "RECIPIENT_SUPPRESSED"
        else:
            assert not isinstance(result, BaseException)
            assert result.id == verification.id
    rows = await pool.fetch(
        "SELECT v.id, m.to_number FROM verifications v JOIN messages m ON m.id = v.message_id "
        "WHERE v.account_id = $1",
        account_id,
    )
    assert {r["id"] for r in rows} == {v.id for v, _ in attempts if v.mobile != SUPPRESSED}
    assert await stored(pool, account_id) == (48, 48)


async def test_checks_in_groups_answer_each_verification_once_across_replicas(
    pool: asyncpg.Pool,
) -> None:
    """Checks of many verifications from two stores (two replicas), in opposite orders,
    each verification checked four times with its right code: the groups lock their
    rows in one order (no deadlock), each verification is verified exactly once and
    the other checks find it already used; a check with another mobile finds nothing."""
    account_id = (await PgAccountStore(pool).create_account("otp-checks", verified=True)).id
    writer = PgVerificationStore(pool, PgVelocityCounters(pool))
    made = [attempt(account_id, f"+86137{n:08d}") for n in range(30)]
    await asyncio.gather(
        *(
            writer.create(v, m, mobile_interval=0, checks=[], judge=lambda results: None)
            for v, m in made
        )
    )
    replicas = [PgVerificationStore(pool, PgVelocityCounters(pool)) for _ in range(2)]
    calls = [
        store.check(account_id, v.id, v.mobile, b"hash")
        for n, store in enumerate(replicas)
        for _ in range(2)
        for v, _ in (made if n == 0 else reversed(made))
    ]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), 30)
    by_id: dict[str, list[CheckResult]] = {}
    order = [v.id for n in range(2) for _ in range(2) for v, _ in (made if n == 0 else made[::-1])]
    for verify_id, outcome in zip(order, outcomes, strict=True):
        by_id.setdefault(verify_id, []).append(outcome.result)
    for results in by_id.values():
        assert sorted(r.value for r in results) == sorted(
            [CheckResult.VALID.value] + [CheckResult.ALREADY_VERIFIED.value] * 3
        )
    verification = made[0][0]
    elsewhere = await replicas[0].check(account_id, verification.id, "+8613900000000", b"hash")
    assert elsewhere.result == CheckResult.NOT_FOUND
    assert await pool.fetchval(
        "SELECT count(*) FROM verifications WHERE account_id = $1 AND state = $2",
        account_id,
        int(VerificationState.VERIFIED),
    ) == len(made)

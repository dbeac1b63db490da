"""OTP verifications: the send transaction and the check transaction.

Send: in one transaction, refuse a mobile the account suppressed for verification
codes, claim the request_id (if any), enforce the per-mobile interval (an atomic
conditional upsert), count the velocity windows (the caller's ``judge`` raises to
refuse, which rolls everything back), store the verification and its outbox message
(one statement). Nothing of a refused send remains. With no
request_id, interval or counters, that one statement is the whole send: it stores
nothing for a suppressed mobile, and that is how the refusal is known.

Check: one statement locks the verification row (``FOR UPDATE``), compares the
stored hash with the candidate's and writes the new state, so concurrent checks are
serialised: one success at most, and never more wrong attempts than allowed. A
check or expiry that ends a verification (VERIFIED, EXPIRED, EXHAUSTED) records the
outcome's event in the same statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg

from server.domain.errors import ResourceExhausted
from server.domain.guardrails import DailyCaps
from server.domain.models import NewMessage, UseType, VerificationState
from server.domain.otp_guard import VelocityCheck, VelocityResult
from server.domain.ports import IdempotencyKey
from server.domain.suppression import recipient_suppressed
from server.domain.verification import (
    CheckOutcome,
    CheckResult,
    NewVerification,
    StoredVerification,
)
from server.store.account_events import EVENT_TYPE_VERIFICATION, lock_when_any
from server.store.balance import charge_balance
from server.store.daily_caps import take_daily
from server.store.idempotency import claim_key
from server.store.messages import message_columns, with_messages
from server.store.pool import unavailable_on_connection_errors
from server.store.suppressions import matches, suppressed
from server.store.velocity import PgVelocityCounters

_MOBILE_INTERVAL = """
INSERT INTO otp_mobile_last (account_id, mobile, last_sent_at) VALUES ($1, $2, now())
ON CONFLICT (account_id, mobile) DO UPDATE SET last_sent_at = now()
    WHERE otp_mobile_last.last_sent_at <= now() - make_interval(secs => $3)
RETURNING last_sent_at
"""


# The verification and its outbox message (with its first event), in one statement,
# unless the account suppressed the mobile for verification codes: then neither is
# stored and no message_id comes back (the suppression check costs no round trip).
_CREATE = (
    with_messages(
        f"""
v AS (
    INSERT INTO verifications (id, account_id, mobile, scene, channel, code_hash, state,
                               attempts_left, expires_at, message_id)
    SELECT $19::text, $20::bigint, $21::text, $22::text, $23::smallint, $24::bytea,
           {VerificationState.PENDING:d}, $25::integer, $26::timestamptz, $27::text
    WHERE NOT EXISTS (SELECT FROM suppressions s
                      WHERE {matches("$20::bigint", "$21::text", f"{UseType.VERIFICATION:d}")})
)""",
        "WHERE NOT EXISTS (SELECT FROM suppressions s WHERE "
        + matches("u.account_id", "u.to_number", "u.use_type")
        + ")",
    )
    + "RETURNING message_id"
)

# A verification that left PENDING has an outcome; the statement that ends it records
# the outcome's event (store/account_events.py), from ``changed`` (id, account_id,
# state, updated_at), after the account log's lock (``lock_when_any``).
_ENDED = f"state <> {VerificationState.PENDING:d}"
_OUTCOME_EVENTS = f"""
outcome_events AS (
    INSERT INTO account_events (event_id, account_id, event_type, subject_id, status,
                                occurred_at)
    SELECT nextval('message_event_ids'), c.account_id, {EVENT_TYPE_VERIFICATION}, c.id,
           c.state, c.updated_at
    FROM changed c CROSS JOIN account_events_lock
    WHERE c.{_ENDED}
)"""

# Locks the row, compares the hashes and moves a pending verification on: expired if
# late; else one attempt used, and verified on a match or exhausted on the last miss.
# Under READ COMMITTED, a check that waited for the lock sees the row as the check
# before it left it. A wrong mobile changes nothing. The hashes are keyed HMACs, so
# how long the comparison takes tells a caller nothing about the code.
_CHECK = f"""
WITH cur AS (
    SELECT id, mobile, state, attempts_left, expires_at <= now() AS late,
           code_hash = $4 AS ok
    FROM verifications WHERE id = $1 AND account_id = $2 FOR UPDATE
),
next AS (
    SELECT id,
           CASE WHEN late THEN {VerificationState.EXPIRED:d}
                WHEN ok THEN {VerificationState.VERIFIED:d}
                WHEN attempts_left <= 1 THEN {VerificationState.EXHAUSTED:d}
                ELSE {VerificationState.PENDING:d} END AS state,
           CASE WHEN late THEN attempts_left ELSE greatest(attempts_left - 1, 0) END
               AS attempts_left
    FROM cur WHERE mobile = $3 AND state = {VerificationState.PENDING:d}
),
changed AS (
    UPDATE verifications v SET state = next.state, attempts_left = next.attempts_left,
                               updated_at = now()
    FROM next WHERE v.id = next.id
    RETURNING v.id, v.account_id, v.state, v.updated_at
),
{lock_when_any("changed", _ENDED)},
{_OUTCOME_EVENTS}
SELECT cur.mobile, cur.state, cur.attempts_left,
       next.state AS new_state, next.attempts_left AS new_attempts_left
FROM cur LEFT JOIN next ON true
"""


# Pending verifications past their expiry end EXPIRED, each with its outcome event.
_EXPIRE = f"""
WITH changed AS (
    UPDATE verifications SET state = {VerificationState.EXPIRED:d}, updated_at = now()
    WHERE id IN (
        SELECT id FROM verifications
        WHERE state = {VerificationState.PENDING:d} AND expires_at <= now()
        ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
    )
    RETURNING id, account_id, state, updated_at
),
{lock_when_any("changed", _ENDED)},
{_OUTCOME_EVENTS}
SELECT count(*) FROM changed
"""


class PgVerificationStore:
    def __init__(self, pool: asyncpg.Pool, velocity: PgVelocityCounters) -> None:
        self._pool = pool
        self._velocity = velocity

    async def create(
        self,
        verification: NewVerification,
        message: NewMessage,
        *,
        mobile_interval: float,
        checks: Sequence[VelocityCheck],
        judge: Callable[[Sequence[VelocityResult]], None],
        key: IdempotencyKey | None = None,
        caps: DailyCaps | None = None,
    ) -> StoredVerification:
        """Stores the verification and its message, or raises (storing nothing).

        With ``key``, a repeat of an earlier request returns the earlier verification."""
        stored = StoredVerification(verification.id, verification.expires_at, message.id)
        caps = caps if caps is not None and caps.active else None
        if (
            key is None
            and mobile_interval <= 0
            and not checks
            and caps is None
            and not message.charge
        ):
            with unavailable_on_connection_errors():
                created = await self._pool.fetchval(_CREATE, *_create_args(verification, message))
            if created is None:
                raise recipient_suppressed(verification.mobile)
            return stored
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                # First, as before any limit counts: a suppressed mobile is refused
                # whatever else the request would meet.
                if await suppressed(
                    conn, verification.account_id, verification.mobile, UseType.VERIFICATION
                ):
                    raise recipient_suppressed(verification.mobile)
                if key is not None:
                    earlier_id = await claim_key(conn, key, verification.id)
                    if earlier_id is not None:
                        earlier = await conn.fetchrow(
                            "SELECT id, expires_at, message_id FROM verifications WHERE id = $1",
                            earlier_id,
                        )
                        assert earlier is not None
                        return StoredVerification(
                            earlier["id"], earlier["expires_at"], earlier["message_id"]
                        )
                if mobile_interval > 0:
                    sent = await conn.fetchval(
                        _MOBILE_INTERVAL,
                        verification.account_id,
                        verification.mobile,
                        mobile_interval,
                    )
                    if sent is None:
                        wait = await conn.fetchval(
                            "SELECT extract(epoch FROM last_sent_at + make_interval(secs => $3)"
                            " - now()) FROM otp_mobile_last WHERE account_id = $1 AND mobile = $2",
                            verification.account_id,
                            verification.mobile,
                            mobile_interval,
                        )
                        raise ResourceExhausted(
                            "a code was sent to this mobile moments ago; wait before another",
                            retry_after=max(1.0, float(wait or mobile_interval)),
                            reason="MOBILE_INTERVAL",
                            quota_subject=f"mobile:{verification.mobile}",
                            quota_description=f"one code every {mobile_interval:g} s",
                        )
                if checks:
                    judge(await self._velocity.hit(conn, checks))
                if caps is not None:
                    await take_daily(conn, verification.account_id, verification.mobile, caps)
                if await conn.fetchval(_CREATE, *_create_args(verification, message)) is None:
                    raise recipient_suppressed(verification.mobile)  # suppressed meanwhile
                await charge_balance(conn, message.account_id, message.charge)
        return stored

    async def check(
        self, account_id: int, verify_id: str, mobile: str, candidate: bytes
    ) -> CheckOutcome:
        """Checks ``candidate`` (the keyed hash of the code given) against the stored one."""
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(_CHECK, verify_id, account_id, mobile, candidate)
        if row is None or row["mobile"] != mobile:
            return CheckOutcome(CheckResult.NOT_FOUND)
        state = VerificationState(row["state"])
        if state == VerificationState.VERIFIED:
            return CheckOutcome(CheckResult.ALREADY_VERIFIED, 0, state)
        if state == VerificationState.EXHAUSTED:
            return CheckOutcome(CheckResult.EXHAUSTED, 0, state)
        if state == VerificationState.EXPIRED:
            return CheckOutcome(CheckResult.EXPIRED, row["attempts_left"], state)
        new_state = VerificationState(row["new_state"])
        left = int(row["new_attempts_left"])
        if new_state == VerificationState.EXPIRED:
            return CheckOutcome(CheckResult.EXPIRED, left, new_state)
        if new_state == VerificationState.VERIFIED:
            return CheckOutcome(CheckResult.VALID, 0, new_state)
        return CheckOutcome(CheckResult.INVALID, left, new_state)

    async def expire_pending(self, limit: int = 1000) -> int:
        """Marks pending verifications past their expiry EXPIRED (rows are kept)."""
        with unavailable_on_connection_errors():
            count = await self._pool.fetchval(_EXPIRE, limit)
        return int(count)


def _create_args(verification: NewVerification, message: NewMessage) -> list[object]:
    return [
        *message_columns([message]),
        verification.id,
        verification.account_id,
        verification.mobile,
        verification.scene,
        verification.channel,
        verification.code_hash,
        verification.attempts,
        verification.expires_at,
        message.id,
    ]

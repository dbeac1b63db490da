"""OTP verifications: the send transaction and the check transaction.

Send: in one transaction, claim the request_id (if any), enforce the per-mobile
interval (an atomic conditional upsert), count the velocity windows (the caller's
``judge`` raises to refuse, which rolls everything back), store the verification
and its outbox message. Nothing of a refused send remains.

Check: the verification row is locked (``FOR UPDATE``) while the code is compared,
so concurrent checks are serialised: one success at most, and never more wrong
attempts than allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg

from server.domain.errors import ResourceExhausted
from server.domain.models import NewMessage, VerificationState
from server.domain.otp_guard import VelocityCheck, VelocityResult
from server.domain.ports import IdempotencyKey
from server.domain.verification import (
    CheckOutcome,
    CheckResult,
    NewVerification,
    StoredVerification,
)
from server.store.idempotency import claim_key
from server.store.messages import insert_messages
from server.store.pool import Conn, unavailable_on_connection_errors
from server.store.velocity import PgVelocityCounters

_MOBILE_INTERVAL = """
INSERT INTO otp_mobile_last (account_id, mobile, last_sent_at) VALUES ($1, $2, now())
ON CONFLICT (account_id, mobile) DO UPDATE SET last_sent_at = now()
    WHERE otp_mobile_last.last_sent_at <= now() - make_interval(secs => $3)
RETURNING last_sent_at
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
    ) -> StoredVerification:
        """Stores the verification and its message, or raises (storing nothing).

        With ``key``, a repeat of an earlier request returns the earlier verification."""
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
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
                await conn.execute(
                    """
                    INSERT INTO verifications (id, account_id, mobile, scene, channel, code_hash,
                                               state, attempts_left, expires_at, message_id)
                    VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9)
                    """,
                    verification.id,
                    verification.account_id,
                    verification.mobile,
                    verification.scene,
                    verification.channel,
                    verification.code_hash,
                    verification.attempts,
                    verification.expires_at,
                    message.id,
                )
                await insert_messages(conn, [message])
        return StoredVerification(verification.id, verification.expires_at, message.id)

    async def check(
        self,
        account_id: int,
        verify_id: str,
        mobile: str,
        matches: Callable[[bytes], bool],
    ) -> CheckOutcome:
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT mobile, state, attempts_left, code_hash, expires_at <= now() AS late "
                    "FROM verifications WHERE id = $1 AND account_id = $2 FOR UPDATE",
                    verify_id,
                    account_id,
                )
                if row is None or row["mobile"] != mobile:
                    return CheckOutcome(CheckResult.NOT_FOUND)
                state = VerificationState(row["state"])
                if state == VerificationState.VERIFIED:
                    return CheckOutcome(CheckResult.ALREADY_VERIFIED, 0, state)
                if state == VerificationState.EXHAUSTED:
                    return CheckOutcome(CheckResult.EXHAUSTED, 0, state)
                if state == VerificationState.EXPIRED or row["late"]:
                    await _set_state(
                        conn, verify_id, VerificationState.EXPIRED, row["attempts_left"]
                    )
                    return CheckOutcome(
                        CheckResult.EXPIRED, row["attempts_left"], VerificationState.EXPIRED
                    )
                left = max(int(row["attempts_left"]) - 1, 0)
                if matches(bytes(row["code_hash"])):
                    await _set_state(conn, verify_id, VerificationState.VERIFIED, left)
                    return CheckOutcome(CheckResult.VALID, 0, VerificationState.VERIFIED)
                state = VerificationState.EXHAUSTED if left == 0 else VerificationState.PENDING
                await _set_state(conn, verify_id, state, left)
                return CheckOutcome(CheckResult.INVALID, left, state)

    async def expire_pending(self, limit: int = 1000) -> int:
        """Marks pending verifications past their expiry EXPIRED (rows are kept)."""
        with unavailable_on_connection_errors():
            result: str = await self._pool.execute(
                """
                UPDATE verifications SET state = 3, updated_at = now()
                WHERE id IN (
                    SELECT id FROM verifications WHERE state = 1 AND expires_at <= now()
                    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
                )
                """,
                limit,
            )
        return int(result.rsplit(" ", 1)[-1])


async def _set_state(conn: Conn, verify_id: str, state: VerificationState, left: int) -> None:
    await conn.execute(
        "UPDATE verifications SET state = $2, attempts_left = $3, updated_at = now() WHERE id = $1",
        verify_id,
        int(state),
        left,
    )

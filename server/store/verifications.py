"""OTP verifications: the send transaction and the check transaction.

Send: in one transaction, refuse a mobile the account suppressed for verification
codes, claim the request_id (if any), enforce the per-mobile interval (an atomic
conditional upsert), count the velocity windows (the caller's ``judge`` raises to
refuse, which rolls everything back), store the verification and its outbox message
(one statement). Nothing of a refused send remains. With no
request_id, interval or counters, that one statement is the whole send: it stores
nothing for a suppressed mobile, and that is how the refusal is known. Such sends are
group-committed: those that arrive while a group is being written go together in the
next statement (one commit and one hold of the event log's lock for all), and each
caller is answered only after its rows have committed.

Check: one statement locks the verification row (``FOR UPDATE``), compares the
stored hash with the candidate's and writes the new state, so concurrent checks are
serialised: one success at most, and never more wrong attempts than allowed. Checks
are group-committed too: the statement takes the checks that arrived together, each
of a different verification (a second check of one waits for the next group). A
check or expiry that ends a verification (VERIFIED, EXPIRED, EXHAUSTED) records the
outcome's event in the same statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
from server.store.group_commit import GroupCommit
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


# Verifications and their outbox messages (with their first events), in one
# statement, except those to a mobile the account suppressed for verification codes:
# neither the verification nor its message is stored, and its message_id does not
# come back (the suppression check costs no round trip). One row from the
# transactional path; many from the group commit of the one-statement path.
_CREATE = (
    with_messages(
        f"""
v AS (
    INSERT INTO verifications (id, account_id, mobile, scene, channel, code_hash, state,
                               attempts_left, expires_at, message_id)
    SELECT x.id, x.account_id, x.mobile, x.scene, x.channel, x.code_hash,
           {VerificationState.PENDING:d}, x.attempts_left, x.expires_at, x.message_id
    FROM unnest($19::text[], $20::bigint[], $21::text[], $22::text[], $23::smallint[],
                $24::bytea[], $25::integer[], $26::timestamptz[], $27::text[])
         AS x(id, account_id, mobile, scene, channel, code_hash, attempts_left,
              expires_at, message_id)
    WHERE NOT EXISTS (SELECT FROM suppressions s
                      WHERE {matches("x.account_id", "x.mobile", f"{UseType.VERIFICATION:d}")})
)""",
        "WHERE NOT EXISTS (SELECT FROM suppressions s WHERE "
        + matches("u.account_id", "u.to_number", "u.use_type")
        + ")",
    )
    + "RETURNING message_id"
)

# The group commit of the one-statement path (as store/messages.py's for SendMessage):
# sends that arrive while groups are being written wait and go together, so the event
# log's lock and the commit are taken once per group, not once per code.
MAX_GROUP = 500
MAX_CONCURRENT_GROUPS = 2

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

# Locks the rows, compares the hashes and moves each pending verification on: expired
# if late; else one attempt used, and verified on a match or exhausted on the last
# miss. Checks are group-committed (one statement for the checks that arrive
# together, each of a different verification); the rows are locked in id order, so
# two groups never wait for each other in a cycle. Under READ COMMITTED, a check that
# waited for the lock sees the row as the check before it left it. A wrong mobile
# changes nothing. The hashes are keyed HMACs, so how long the comparison takes tells
# a caller nothing about the code.
_CHECK = f"""
WITH cur AS (
    SELECT v.id, v.mobile, v.state, v.attempts_left, v.expires_at <= now() AS late,
           v.code_hash = r.candidate AS ok, r.mobile AS given_mobile
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[])
         AS r(id, account_id, mobile, candidate)
    JOIN verifications v ON v.id = r.id AND v.account_id = r.account_id
    ORDER BY v.id
    FOR UPDATE OF v
),
judged AS (
    SELECT id, mobile, state, attempts_left,
           mobile = given_mobile AND state = {VerificationState.PENDING:d} AS moves,
           CASE WHEN late THEN {VerificationState.EXPIRED:d}
                WHEN ok THEN {VerificationState.VERIFIED:d}
                WHEN attempts_left <= 1 THEN {VerificationState.EXHAUSTED:d}
                ELSE {VerificationState.PENDING:d} END AS new_state,
           CASE WHEN late THEN attempts_left ELSE greatest(attempts_left - 1, 0) END
               AS new_attempts_left
    FROM cur
),
changed AS (
    UPDATE verifications v SET state = j.new_state, attempts_left = j.new_attempts_left,
                               updated_at = now()
    FROM judged j WHERE v.id = j.id AND j.moves
    RETURNING v.id, v.account_id, v.state, v.updated_at
),
{lock_when_any("changed", _ENDED)},
{_OUTCOME_EVENTS}
SELECT id, mobile, state, attempts_left,
       CASE WHEN moves THEN new_state END AS new_state,
       CASE WHEN moves THEN new_attempts_left END AS new_attempts_left
FROM judged
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


# A send of the one-statement path: its rows.
_Send = tuple[NewVerification, NewMessage]


@dataclass(frozen=True)
class _Check:
    """A check waiting for its group (answered with its row of ``_CHECK``)."""

    verify_id: str
    account_id: int
    mobile: str
    candidate: bytes = field(repr=False)


class PgVerificationStore:
    def __init__(self, pool: asyncpg.Pool, velocity: PgVelocityCounters) -> None:
        self._pool = pool
        self._velocity = velocity
        self._sends: GroupCommit[_Send, None] = GroupCommit(
            self._write_group,
            name="verification-group",
            max_group=MAX_GROUP,
            concurrent=MAX_CONCURRENT_GROUPS,
        )
        # At most one check of a verification per group: a second waits for the next.
        self._checks: GroupCommit[_Check, asyncpg.Record | None] = GroupCommit(
            self._check_group,
            name="otp-checks",
            max_group=MAX_GROUP,
            concurrent=MAX_CONCURRENT_GROUPS,
            key=lambda check: check.verify_id,
        )

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
            await self._sends.submit((verification, message))
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
                if not await conn.fetch(_CREATE, *_create_args([(verification, message)])):
                    raise recipient_suppressed(verification.mobile)  # suppressed meanwhile
                await charge_balance(conn, message.account_id, message.charge)
        return stored

    async def _write_group(self, group: list[_Send]) -> list[BaseException | None]:
        """Stores a group in one statement; each send stored, or refused (suppressed)."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(_CREATE, *_create_args(group))
        stored = {r["message_id"] for r in rows}
        return [None if m.id in stored else recipient_suppressed(v.mobile) for v, m in group]

    async def check(
        self, account_id: int, verify_id: str, mobile: str, candidate: bytes
    ) -> CheckOutcome:
        """Checks ``candidate`` (the keyed hash of the code given) against the stored one.

        Checks that arrive while others are being written go together in the next
        group (at most one check of a verification per group: a second waits for the
        next); each caller is answered after its group has committed."""
        row = await self._checks.submit(_Check(verify_id, account_id, mobile, candidate))
        return _outcome(row, mobile)

    async def _check_group(self, group: list[_Check]) -> list[asyncpg.Record | None]:
        with unavailable_on_connection_errors():
            found = await self._pool.fetch(
                _CHECK,
                [c.verify_id for c in group],
                [c.account_id for c in group],
                [c.mobile for c in group],
                [c.candidate for c in group],
            )
        rows = {r["id"]: r for r in found}
        return [rows.get(c.verify_id) for c in group]

    async def expire_pending(self, limit: int = 1000) -> int:
        """Marks pending verifications past their expiry EXPIRED (rows are kept)."""
        with unavailable_on_connection_errors():
            count = await self._pool.fetchval(_EXPIRE, limit)
        return int(count)


def _outcome(row: asyncpg.Record | None, mobile: str) -> CheckOutcome:
    """A check's outcome from its row of ``_CHECK`` (None: no such verification)."""
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


def _create_args(rows: Sequence[tuple[NewVerification, NewMessage]]) -> list[object]:
    return [
        *message_columns([m for _, m in rows]),
        [v.id for v, _ in rows],
        [v.account_id for v, _ in rows],
        [v.mobile for v, _ in rows],
        [v.scene for v, _ in rows],
        [v.channel for v, _ in rows],
        [v.code_hash for v, _ in rows],
        [v.attempts for v, _ in rows],
        [v.expires_at for v, _ in rows],
        [m.id for _, m in rows],
    ]

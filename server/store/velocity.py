"""Fixed-window velocity counters in PostgreSQL, shared by every replica.

``hit`` increments counters inside the caller's transaction, in one statement:
the increment takes the counter row's lock, which is held until the caller
commits or rolls back. A caller that refuses a request because a count went over
its limit rolls back, so a refused request leaves no count, and a concurrent
request on the same counter waits for that outcome and then counts from the
committed value: with a limit of N, exactly N of any number of racing requests
pass. The price is that requests on one counter run one at a time through the
rest of the caller's transaction, which should therefore be short.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from server.domain.otp_guard import VelocityCheck, VelocityResult
from server.store.pool import Conn, unavailable_on_connection_errors

__all__ = ["PgVelocityCounters", "VelocityCheck", "VelocityResult"]

# Windows are date_bin(window, t, epoch): floor(t / window) * window, exact to the
# microsecond. statement_timestamp() rather than now(): the caller's transaction
# may have begun a while ago. Rows are inserted in key order, so two requests that
# touch the same counters lock them in the same order and cannot deadlock.
_HIT = """
WITH u AS (
    SELECT ord, scope, key, make_interval(secs => secs) AS width
    FROM unnest($1::text[], $2::text[], $3::float8[]) WITH ORDINALITY AS t(scope, key, secs, ord)
),
c AS (
    SELECT ord, scope, key, width,
           date_bin(width, statement_timestamp(), timestamptz 'epoch') AS window_start
    FROM u
),
counted AS (
    INSERT INTO velocity_counters AS v (scope, key, window_start, window_end, count)
    SELECT scope, key, window_start, window_start + width, 1 FROM c
    ORDER BY scope, key, window_start, width
    ON CONFLICT (scope, key, window_start, window_end) DO UPDATE SET count = v.count + 1
    RETURNING v.scope, v.key, v.window_start, v.window_end, v.count
)
SELECT counted.count, counted.window_end, statement_timestamp() AS counted_at
FROM c JOIN counted
  ON counted.scope = c.scope AND counted.key = c.key
 AND counted.window_start = c.window_start AND counted.window_end = c.window_start + c.width
ORDER BY c.ord
"""

_PURGE = "DELETE FROM velocity_counters WHERE window_end < statement_timestamp() - $1::interval"


class PgVelocityCounters:
    """Counters in the ``velocity_counters`` table.

    ``pool`` serves ``purge``; ``hit`` runs on the connection of the caller's
    transaction.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def hit(self, conn: Conn, checks: Sequence[VelocityCheck]) -> list[VelocityResult]:
        """Increments each check's counter in its current window, in one round trip.

        Returns, in the order of ``checks``, each count after the increment (this
        request included) and its window's end. Must run inside a transaction that
        the caller rolls back when it refuses the request (see the module's note);
        outside one, every hit counts at once, refused or not.

        Raises ValueError when two checks name the same counter (scope, key and
        window length), which one statement cannot increment twice.
        """
        if not checks:
            return []
        seen: set[tuple[str, str, int]] = set()
        for check in checks:
            # Window lengths as PostgreSQL keeps them: whole microseconds.
            counter = (check.scope, check.key, round(check.window_seconds * 1_000_000))
            if counter in seen:
                raise ValueError(f"the counter {check.scope}/{check.key} is checked twice")
            seen.add(counter)
        with unavailable_on_connection_errors():
            rows = await conn.fetch(
                _HIT,
                [c.scope for c in checks],
                [c.key for c in checks],
                [float(c.window_seconds) for c in checks],
            )
        return [
            VelocityResult(
                scope=check.scope,
                key=check.key,
                count=row["count"],
                limit=check.limit,
                window_end=row["window_end"],
                counted_at=row["counted_at"],
            )
            for check, row in zip(checks, rows, strict=True)
        ]

    async def purge(self, older_than: timedelta) -> int:
        """Deletes the windows that ended more than ``older_than`` ago; returns how
        many. Run it now and then (its cost grows with the rows it deletes)."""
        with unavailable_on_connection_errors():
            status = await self._pool.execute(_PURGE, older_than)
        return int(status.split()[-1])

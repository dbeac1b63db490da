"""request_id idempotency keys (AIP-155): one row per (account, operation, key).

A key is claimed inside the caller's transaction. A repeat within the window (one
hour) waits for the first call to commit, then gets the first call's resource id;
the same key with other content is refused. After the window the key is free again.
"""

from __future__ import annotations

from server.domain.errors import FailedPrecondition
from server.domain.ports import IdempotencyKey
from server.store.pool import Conn

IDEMPOTENCY_WINDOW = "1 hour"

_CLAIM = f"""
INSERT INTO idempotency_keys (account_id, operation, request_id, request_hash, resource_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id, operation, request_id) DO UPDATE
    SET request_hash = EXCLUDED.request_hash,
        resource_id = EXCLUDED.resource_id,
        created_at = now()
    WHERE idempotency_keys.created_at < now() - interval '{IDEMPOTENCY_WINDOW}'
RETURNING resource_id
"""


async def claim_key(conn: Conn, key: IdempotencyKey, resource_id: str) -> str | None:
    """Claims ``key`` for ``resource_id``: None when claimed, else the earlier
    request's resource id. Raises FailedPrecondition if the key came with other content."""
    claimed = await conn.fetchval(
        _CLAIM, key.account_id, key.operation, key.request_id, key.request_hash, resource_id
    )
    if claimed is not None:
        return None
    earlier = await conn.fetchrow(
        "SELECT request_hash, resource_id FROM idempotency_keys "
        "WHERE account_id = $1 AND operation = $2 AND request_id = $3",
        key.account_id,
        key.operation,
        key.request_id,
    )
    if earlier is None or bytes(earlier["request_hash"]) != key.request_hash:
        raise FailedPrecondition(
            "request_id was already used with different content", reason="REQUEST_ID_REUSED"
        )
    return str(earlier["resource_id"])

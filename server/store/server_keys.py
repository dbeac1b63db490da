"""The server key used for OTP hashing and sealing when SMSGW_SECRET_KEY is unset.

A random key is created once and shared by every replica through the database.
That is for development: with the key beside the hashes, a database leak also
leaks the key. Production sets SMSGW_SECRET_KEY.
"""

from __future__ import annotations

import secrets

import asyncpg

from server.store.pool import unavailable_on_connection_errors


async def load_or_create_key(pool: asyncpg.Pool, name: str = "otp") -> bytes:
    with unavailable_on_connection_errors():
        await pool.execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            name,
            secrets.token_bytes(32),
        )
        value = await pool.fetchval("SELECT value FROM server_secrets WHERE name = $1", name)
    return bytes(value)

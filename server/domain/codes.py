"""One-time codes: generation, keyed hashing and sealing (no I/O).

A code is stored only as HMAC-SHA256(hash key, verify_id + ":" + code); a check
hashes the code given the same way and the store compares the two hashes (without the
key, how alike two hashes are says nothing about the codes). The outbox message that
carries it holds it sealed with Fernet (authenticated encryption) until a provider has
taken it. Both keys are derived from one server key, so replicas sharing the key agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken


def generate_code(length: int) -> str:
    """A uniformly random string of ``length`` ASCII digits (secrets, not random)."""
    return "".join(secrets.choice("0123456789") for _ in range(length))


class CodeKeys:
    def __init__(self, server_key: bytes) -> None:
        if len(server_key) < 32:
            raise ValueError("the server key must be at least 32 bytes")
        self._hash_key = hmac.new(server_key, b"smsgw otp hash v1", hashlib.sha256).digest()
        seal_key = hmac.new(server_key, b"smsgw otp seal v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(seal_key))

    def digest(self, verify_id: str, code: str) -> bytes:
        return hmac.new(self._hash_key, f"{verify_id}:{code}".encode(), hashlib.sha256).digest()

    def seal(self, code: str) -> bytes:
        return self._fernet.encrypt(code.encode())

    def unseal(self, sealed: bytes) -> str | None:
        """The code, or None if the token was not made with this key."""
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            return None

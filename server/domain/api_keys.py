"""API keys and secrets: generation and slow salted hashing (stdlib scrypt)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _random

# scrypt cost: ~20-40 ms per hash on this class of machine. Verified secrets are
# cached by the authenticator, so the cost is paid once per credential, not per call.
_N, _R, _P = 2**14, 8, 1


def new_api_key() -> str:
    return "app_" + _random.token_hex(12)


def new_api_secret() -> str:
    return "sec_" + _random.token_urlsafe(30)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """Returns ``scrypt$N$r$p$salt$digest``; the secret itself is never stored."""
    salt = _random.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Compares in constant time; a malformed stored hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)

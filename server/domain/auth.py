"""Authentication of Basic credentials, with an in-memory cache of verified secrets.

A secret is checked with the slow hash once; afterwards a call costs a dictionary
look-up and a constant-time digest comparison. The cache holds a keyed hash of the
secret (HMAC with a per-process random key), never the secret. The credential row
is re-read at most every ``recheck_seconds`` so a revocation takes effect within
that time; open streams are re-checked as often (``recheck``).

Guessing is throttled per (api key, source address) and counted before the slow
hash, so a burst of parallel wrong secrets is hashed at most the limit's times. An
unknown key is hashed against a dummy hash, so it answers as slowly as a known key
with a wrong secret: the timing does not tell which keys exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server.domain.api_keys import hash_secret, verify_secret
from server.domain.errors import PermissionDenied, Unauthenticated
from server.domain.limits import AuthFailureThrottle
from server.domain.messaging import Caller
from server.domain.models import Credential
from server.domain.ports import CredentialRepository

_HASHING = ThreadPoolExecutor(
    max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="secret-hash"
)


@functools.cache
def _dummy() -> str:
    """A hash no secret is known for, checked for unknown keys (equal timing)."""
    return hash_secret(secrets.token_urlsafe(30))


@dataclass
class _Verified:
    credential: Credential
    secret_digest: bytes
    checked_at: float


def parse_basic(authorization: str | None) -> tuple[str, str]:
    if not authorization:
        raise Unauthenticated("missing authorization metadata", reason="MISSING_CREDENTIALS")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthenticated(
            "authorization must be 'Basic base64(apiKey:apiSecret)'", reason="BAD_CREDENTIALS"
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthenticated(
            "authorization must be 'Basic base64(apiKey:apiSecret)'", reason="BAD_CREDENTIALS"
        ) from exc
    api_key, sep, secret = decoded.partition(":")
    if not sep or not api_key or not secret:
        raise Unauthenticated(
            "authorization must be 'Basic base64(apiKey:apiSecret)'", reason="BAD_CREDENTIALS"
        )
    return api_key, secret


def peer_allowed(credential: Credential, peer_ip: str | None) -> bool:
    if not credential.allow_cidrs:
        return True
    if peer_ip is None:
        return False
    try:
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(cidr, strict=False) for cidr in credential.allow_cidrs
    )


class Authenticator:
    def __init__(
        self,
        credentials: CredentialRepository,
        *,
        recheck_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        failures: AuthFailureThrottle | None = None,
    ) -> None:
        self._credentials = credentials
        self._failures = failures or AuthFailureThrottle(0)
        self.recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[str, _Verified] = {}
        self._in_flight: dict[tuple[str, bytes], asyncio.Future[Credential | None]] = {}
        self.slow_checks = 0  # secrets hashed (for measurements)

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._cache_key, secret.encode(), hashlib.sha256).digest()

    async def authenticate(self, authorization: str | None, peer_ip: str | None) -> Caller:
        api_key, secret = parse_basic(authorization)
        credential = await self._verified_credential(api_key, secret, peer_ip)
        if credential is None or credential.revoked_at is not None:
            raise Unauthenticated("invalid credentials", reason="BAD_CREDENTIALS")
        if not peer_allowed(credential, peer_ip):
            raise PermissionDenied(
                "this credential may not be used from this address", reason="IP_NOT_ALLOWED"
            )
        return Caller(
            account_id=credential.account_id,
            verified=credential.account_verified,
            otp_max_attempts=credential.otp_max_attempts,
            otp_allowed_regions=None
            if credential.otp_allowed_regions is None
            else frozenset(credential.otp_allowed_regions),
            quiet_hours=credential.quiet_hours,
            send_per_second=credential.send_per_second,
            query_per_second=credential.query_per_second,
            admin=credential.admin,
            allowed_countries=None
            if credential.allowed_countries is None
            else frozenset(credential.allowed_countries),
            daily_message_cap=credential.daily_message_cap,
            per_mobile_daily_cap=credential.per_mobile_daily_cap,
            prepaid=credential.prepaid,
        )

    async def recheck(self, authorization: str | None) -> None:
        """For an open stream: re-reads the credential it was opened with; raises
        UNAUTHENTICATED (CREDENTIAL_REVOKED) if it was revoked or replaced since."""
        api_key, secret = parse_basic(authorization)
        digest = self._digest(secret)
        fresh = await self._credentials.get_credential(api_key)
        cached = self._cache.get(api_key)
        if fresh is not None and fresh.revoked_at is None:
            if (
                cached is not None
                and hmac.compare_digest(cached.secret_digest, digest)
                and cached.credential.secret_hash == fresh.secret_hash
            ):
                cached.credential, cached.checked_at = fresh, self._monotonic()
                return
            if await self._slow_check(secret, fresh.secret_hash):
                self._cache[api_key] = _Verified(fresh, digest, self._monotonic())
                return
        self._cache.pop(api_key, None)
        raise Unauthenticated("the credential was revoked", reason="CREDENTIAL_REVOKED")

    async def _slow_check(self, secret: str, secret_hash: str) -> bool:
        """The scrypt check, on threads of its own: a flood of guesses queues there
        instead of taking the default executor the rest of the process uses."""
        self.slow_checks += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_HASHING, verify_secret, secret, secret_hash)

    async def _verified_credential(
        self, api_key: str, secret: str, peer_ip: str | None
    ) -> Credential | None:
        digest = self._digest(secret)
        now = self._monotonic()
        cached = self._cache.get(api_key)
        if cached is not None and hmac.compare_digest(cached.secret_digest, digest):
            if now - cached.checked_at < self.recheck_seconds:
                return cached.credential
            fresh = await self._credentials.get_credential(api_key)
            if fresh is None or fresh.secret_hash != cached.credential.secret_hash:
                self._cache.pop(api_key, None)
                return None
            cached.credential, cached.checked_at = fresh, now
            return fresh
        key = (api_key, digest)
        pending = self._in_flight.get(key)
        if pending is not None:  # the same secret is being hashed: share its answer
            return await asyncio.shield(pending)
        # Counted as failed before hashing; given back if the secret is right.
        self._failures.reserve(api_key, peer_ip)
        future: asyncio.Future[Credential | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            credential = await self._credentials.get_credential(api_key)
            stored = credential.secret_hash if credential is not None else _dummy()
            ok = await self._slow_check(secret, stored) and credential is not None
            result = credential if ok else None
            if result is not None:
                self._failures.forgive(api_key, peer_ip)
                self._cache[api_key] = _Verified(result, digest, self._monotonic())
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here so an unawaited future does not warn
            raise
        finally:
            del self._in_flight[key]

"""What authentication and the rate limits cost per call, in microseconds.

Times the two checks every authenticated call makes before its handler runs, in
one process, with no network: ``Authenticator.authenticate`` on its cached path (a
verified secret: dictionary look-up, SHA-256, constant-time compare; the credential
is re-read at most once a second) and ``RateLimits.admit`` (two token buckets on a
send). The per-call budget at a given throughput is 1e6 / calls_per_s microseconds:
compare these with it (bench_send.py gives the throughput).

    .venv/bin/python scripts/bench_limits.py            # 200,000 calls each
    .venv/bin/python scripts/bench_limits.py --quick    # 20,000 calls each (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from datetime import UTC, datetime

from server.domain.api_keys import hash_secret
from server.domain.auth import Authenticator
from server.domain.limits import AuthFailureThrottle, RateLimits, RateLimitSettings
from server.domain.messaging import Caller
from server.domain.models import Credential

SEND = "/sms.v1.MessageService/SendMessage"


class OneCredential:
    """The credential store for the run: one credential, held in memory."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential

    async def get_credential(self, api_key: str) -> Credential | None:
        return self.credential if api_key == self.credential.api_key else None


async def per_call_us(n: int) -> dict[str, float]:
    secret = "s" * 40
    credential = Credential(
        id=1,
        account_id=1,
        api_key="k_bench",
        secret_hash=hash_secret(secret),
        allow_cidrs=(),
        created_at=datetime.now(UTC),
        revoked_at=None,
    )
    auth = Authenticator(OneCredential(credential), failures=AuthFailureThrottle(10))
    header = "Basic " + base64.b64encode(f"k_bench:{secret}".encode()).decode()
    await auth.authenticate(header, "127.0.0.1")  # the one slow hash, then cached
    start = time.perf_counter()
    for _ in range(n):
        await auth.authenticate(header, "127.0.0.1")
    auth_us = (time.perf_counter() - start) / n * 1e6

    limits = RateLimits(RateLimitSettings(1e9, 1e9, 1e9, 1.0, 10))
    caller = Caller(account_id=1, verified=True)
    start = time.perf_counter()
    for _ in range(n):
        limits.admit(caller, SEND)
    limits_us = (time.perf_counter() - start) / n * 1e6
    return {"authenticate (cached)": auth_us, "rate limits (send)": limits_us}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.calls
    figures = asyncio.run(per_call_us(n))
    print(f"{'check':<26}{'us/call':>10}{'share at 1,000 calls/s':>27}")
    for name, us in figures.items():
        print(f"{name:<26}{us:>10.2f}{us / 1000:>26.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

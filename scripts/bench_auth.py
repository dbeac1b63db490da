"""Failed-auth cost: how many of 200 parallel wrong secrets get the slow hash, and
whether an unknown api key answers as slowly as a known key with a wrong secret.

Runs gateways in this process on an embedded PostgreSQL (temp dir) and prints a table:

    .venv/bin/python scripts/bench_auth.py

Every wrong secret is distinct, so each UNAUTHENTICATED answer is one scrypt hash;
RESOURCE_EXHAUSTED answers were refused without one. CPU is this process's (the hashes
run on its threads).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from sms.v1 import template_pb2, template_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.app import Gateway
from server.config import Settings
from server.domain.limits import RateLimitSettings
from server.store.accounts import PgAccountStore

PARALLEL = 200
TIMED = 15


def auth(key: str, secret: str) -> tuple[tuple[str, str]]:
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


async def call(stub: template_pb2_grpc.TemplateServiceStub, metadata: object) -> str:
    try:
        await stub.ListTemplates(template_pb2.ListTemplatesRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code().name
    return "OK"


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-auth-") as tmp:
        base = Settings(
            data_dir=Path(tmp),
            grpc_addr="127.0.0.1:0",
            http_addr="127.0.0.1:0",
            dispatch_workers=0,
            secret_key=b"b" * 32,
        )
        throttled = Gateway(base)
        await throttled.start()
        open_gw = Gateway(
            dataclasses.replace(
                base,
                database_url=throttled.database.dsn,
                limits=RateLimitSettings(auth_failures_per_minute=0),
            )
        )
        await open_gw.start()
        try:
            store = PgAccountStore(throttled.pool)
            account = await store.create_account("bench", verified=True)
            credential, _ = await store.create_credential(account.id)
            key = credential.api_key
            print("| measure | value |")
            print("| --- | --- |")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{throttled.grpc_port}") as ch:
                stub = template_pb2_grpc.TemplateServiceStub(ch)
                cpu, wall = time.process_time(), time.perf_counter()
                codes = await asyncio.gather(
                    *(call(stub, auth(key, f"wrong-{i}")) for i in range(PARALLEL))
                )
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(
                f"| {PARALLEL} parallel wrong secrets: hashed (UNAUTHENTICATED) | "
                f"{codes.count('UNAUTHENTICATED')} |"
            )
            print(
                f"| refused unhashed (RESOURCE_EXHAUSTED) | {codes.count('RESOURCE_EXHAUSTED')} |"
            )
            print(f"| CPU / wall for the burst | {cpu:.2f} s / {wall:.2f} s |")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{open_gw.grpc_port}") as ch:
                stub = template_pb2_grpc.TemplateServiceStub(ch)
                known: list[float] = []
                unknown: list[float] = []
                for i in range(TIMED):
                    for into, metadata in (
                        (known, auth(key, f"timed-{i}")),
                        (unknown, auth(f"app_{i:024d}", f"timed-{i}")),
                    ):
                        started = time.perf_counter()
                        assert await call(stub, metadata) == "UNAUTHENTICATED"
                        into.append(time.perf_counter() - started)
            for name, times in (("known key, wrong secret", known), ("unknown key", unknown)):
                print(f"| {name}: median latency | {statistics.median(times) * 1e3:.1f} ms |")
        finally:
            await open_gw.stop()
            await throttled.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""Runs tests/smsc/smsc.pl (Net::SMPP, Debian's libnet-smpp-perl) as a test SMSC and
reads what it recorded: one JSON line per PDU it received, answer or receipt it sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.emulators.common import EmulatorControls, Received

SCRIPT = Path(__file__).with_name("smsc.pl")
SYSTEM_ID = "smsgw"
PASSWORD = "sEcr3t-1"  # SMPP 3.4: at most 8 octets


@dataclass
class Smsc:
    """A running test SMSC; ``records`` reads its log."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    def records(self, event: str | None = None, cmd: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log_path.read_text().splitlines() if line]
        return [
            r
            for r in lines
            if (event is None or r.get("event") == event) and (cmd is None or r.get("cmd") == cmd)
        ]

    def submits(self) -> list[dict[str, Any]]:
        return self.records("pdu", "submit_sm")

    def received(self) -> list[Received]:
        """The submit_sm the SMSC accepted, as the HTTP emulators record theirs."""
        by_seq = {(r["conn"], r["seq"]): r for r in self.submits()}
        out = []
        for answer in self.records("submit_sm_resp"):
            submit = by_seq[(answer["conn"], answer["seq"])]
            text = bytes.fromhex(submit["short_message_hex"])
            coding = submit["data_coding"]
            content = text.decode("utf-16-be" if coding == 8 else "gsm03.38", "replace")
            out.append(Received(answer["message_id"], submit["destination_addr"], content))
        return out

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def kill(self) -> None:
        """SIGKILL: no unbind, no answer to what is in flight."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        await self.kill()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


async def start_smsc(
    controls: EmulatorControls | None = None,
    *,
    port: int = 0,
    log_path: Path | None = None,
    latency: float | None = None,
    reject_prefix: str = "",
    receipt_first: bool = False,
) -> Smsc:
    """Starts the SMSC on 127.0.0.1 (a free port unless ``port``); ``controls`` as the
    HTTP emulators take them (delivery_delay, outcome, fail_rate, fault, latency)."""
    import gsm0338  # noqa: F401  (the "gsm03.38" codec for received())

    c = controls or EmulatorControls()
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="smsc-", suffix=".jsonl")
        os.close(handle)
        log_path = Path(name)
    args = [
        "perl",
        str(SCRIPT),
        f"--port={port}",
        f"--system-id={SYSTEM_ID}",
        f"--password={PASSWORD}",
        f"--log={log_path}",
        f"--delivery-delay={c.delivery_delay}",
        f"--outcome={c.outcome}",
        f"--fail-rate={c.fail_rate}",
        f"--fault={c.fault}",
        f"--latency={c.latency if latency is None else latency}",
    ]
    if reject_prefix:
        args.append(f"--reject-prefix={reject_prefix}")
    if receipt_first:
        args.append("--receipt-first=1")
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 10)
    if not line.startswith(b"LISTENING "):
        await process.wait()
        raise RuntimeError(f"the test SMSC did not start: {line!r}")
    return Smsc(process, int(line.split()[1]), log_path, args)

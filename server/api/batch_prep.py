"""Large batches prepared in processes of their own, not on the server's event loop.

Preparing a 100,000-number batch is seconds of pure Python: decoding its request,
checking every number and value, judging the numbers, rendering the bodies. In
the server process that time holds the GIL, and every other account's calls wait
behind it. So a large request (its bytes kept by server/api/batch_wire.py) is
handed to a preparation process: it decodes the request, runs the domain's
``BatchPreparation`` and sends the messages back a slice at a time, each already
encoded as the lines the store COPYs (``EncodedSlice``).

* One long-lived process (``spawn``: nothing of the server's state is inherited),
  started when first needed, at a lower CPU priority (nice) than the server, one
  batch at a time (a decoded 100,000-number request with its values takes 100-150
  MB); a batch waits for it.
* Bounded memory: a process prepares at most one slice ahead of the slice being
  stored (it waits for the server's acknowledgement of the previous slice).
* A run not read to its end (refused, failed, cancelled), or a process that dies,
  ends with the process killed and replaced: nothing of that batch is stored (the
  store's transaction ends with an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

from google.protobuf.message import DecodeError
from sms.v1 import batch_pb2

from server.domain.batch_tasks import (
    BatchPreparation,
    CreateBatchCommand,
    EncodedSlice,
    InlinePreparer,
    PreparationRun,
    PreparedSlice,
    PrepJob,
)
from server.domain.errors import FieldViolation, InvalidArgument, Unavailable
from server.domain.models import NewMessage
from server.store.batches import copy_row

log = logging.getLogger(__name__)

# Messages a process sends back at a time: small enough that receiving one (and
# routing and storing it) stalls the event loop for a few milliseconds only.
SLICE = 250
NICE = 10
PREPARATION_PROCESSES = 1
ACK = b"+"  # the server has the slice: the next may come
BAD_REQUEST = "the body is not a valid CreateBatch request message"


class PreparationFailed(Unavailable):
    """A preparation process died or failed: nothing of the batch is stored."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the batch could not be prepared ({why}); nothing was stored, call again")


# --- the preparation process -------------------------------------------------


def _serve(conn: Connection) -> None:
    """A preparation process: one batch at a time until the server's end closes."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    while True:
        try:
            job, wire = conn.recv()
        except (EOFError, OSError):
            return
        try:
            _prepare_one(conn, job, wire)
        except (EOFError, OSError, BrokenPipeError):
            return
        del job, wire
        gc.collect()  # the decoded request's cycles, before the next one


def _prepare_one(conn: Connection, job: PrepJob, wire: bytes) -> None:
    # Imported here: the server process never needs it for this.
    from server.api.batch_service import command_of

    try:
        request = batch_pb2.CreateBatchRequest.FromString(wire)
    except DecodeError:
        conn.send(("invalid", [FieldViolation("request", BAD_REQUEST)]))
        return
    del wire
    try:
        prep = BatchPreparation(command_of(request), job, SLICE)
        fingerprint = prep.check()
    except InvalidArgument as exc:
        conn.send(("invalid", exc.violations))
        return
    conn.send(("checked", fingerprint))
    sent = 0
    for messages, rejected in prep.slices():
        # Encoded for COPY here: the server only routes them and passes the bytes on.
        part: PreparedSlice = (_encoded(messages), rejected)
        if sent and conn.recv_bytes() != ACK:
            return
        conn.send_bytes(pickle.dumps(("slice", part), pickle.HIGHEST_PROTOCOL))
        sent += 1
    if sent and conn.recv_bytes() != ACK:
        return
    conn.send(("done", None))


def _encoded(messages: list[NewMessage] | EncodedSlice) -> list[NewMessage] | EncodedSlice:
    if not messages or isinstance(messages, EncodedSlice):
        return messages
    return EncodedSlice(
        messages[0], [m.to_number for m in messages], [copy_row(m) for m in messages]
    )


# --- the server's side ---------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), name="batch-prep", daemon=True)
        self.proc.start()
        child.close()

    async def send(self, item: Any) -> None:
        # A job's bytes may be megabytes: the pipe write waits for the process to
        # read them, off the event loop.
        await asyncio.to_thread(self.conn.send, item)

    def send_ack(self) -> None:
        self.conn.send_bytes(ACK)  # one byte: the pipe never blocks on it

    async def recv(self) -> Any:
        data = await asyncio.to_thread(self.conn.recv_bytes)
        return pickle.loads(data)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


class ProcessPreparer:
    """The Preparer of the server: a large request's batch in a preparation
    process, any other in this process (``InlinePreparer``)."""

    def __init__(self, processes: int) -> None:
        self._inline = InlinePreparer()
        self._processes = max(processes, 1)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._free = asyncio.Semaphore(self._processes)
        self._closed = False

    def start(self, cmd: CreateBatchCommand, job: PrepJob) -> PreparationRun:
        if cmd.wire is None:
            return self._inline.start(cmd, job)
        return _ProcessRun(self, job, cmd.wire)

    async def acquire(self) -> _Worker:
        await self._free.acquire()
        if self._closed:
            self._free.release()
            raise PreparationFailed("the server is stopping")
        while self._idle:
            worker = self._idle.pop()
            if worker.proc.is_alive():
                self._busy.add(worker)
                return worker
            worker.kill()
        try:
            # Starting a process imports the server's modules: off the event loop.
            worker = await asyncio.to_thread(_Worker)
        except BaseException:
            self._free.release()
            raise
        self._busy.add(worker)
        return worker

    def pids(self) -> list[int]:
        """The preparation processes running now (idle or preparing)."""
        workers = [*self._idle, *self._busy]
        return [w.proc.pid for w in workers if w.proc.pid is not None and w.proc.is_alive()]

    def release(self, worker: _Worker, *, reusable: bool) -> None:
        self._busy.discard(worker)
        if reusable and not self._closed:
            self._idle.append(worker)
        else:
            worker.kill()
        self._free.release()

    def close(self) -> None:
        """Ends the idle processes; a process preparing a batch ends with its run."""
        self._closed = True
        for worker in self._idle:
            worker.kill()
        self._idle.clear()


class _ProcessRun:
    def __init__(self, preparer: ProcessPreparer, job: PrepJob, wire: bytes) -> None:
        self._preparer = preparer
        self._job = job
        self._wire: bytes | None = wire
        self._worker: _Worker | None = None
        self._done = False

    async def _recv(self) -> Any:
        assert self._worker is not None
        try:
            return await self._worker.recv()
        except (EOFError, OSError) as exc:
            log.warning("a batch preparation process ended unexpectedly: %r", exc)
            raise PreparationFailed("its preparation process ended") from exc

    async def check(self) -> bytes | None:
        self._worker = await self._preparer.acquire()
        wire, self._wire = self._wire, None
        try:
            await self._worker.send((self._job, wire))
        except (OSError, ValueError) as exc:
            raise PreparationFailed("its preparation process ended") from exc
        del wire
        kind, value = await self._recv()
        if kind == "invalid":
            self._done = True  # the process is ready for the next batch
            raise InvalidArgument(value)
        fingerprint: bytes | None = value
        return fingerprint

    async def slices(self) -> AsyncIterator[PreparedSlice]:
        assert self._worker is not None
        while True:
            kind, value = await self._recv()
            if kind == "done":
                self._done = True
                return
            self._worker.send_ack()  # the process prepares the next slice meanwhile
            part: PreparedSlice = value
            yield part

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._preparer.release(worker, reusable=self._done)

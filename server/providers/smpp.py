"""SMPP 3.4 transport (routing-file kind ``smpp``) on smpp34, an asyncio SMPP library
whose PDU codec, session timers (enquire_link, response timeouts) and sequence
windowing run in its Rust core; this module adds what a gateway needs around it.

- Several binds per provider (``binds``), each a bind_transceiver: receipts and
  mobile-originated messages come back on the bind that may send. A bind that drops
  is bound again with exponential backoff (``reconnect_min`` doubling up to
  ``reconnect_max`` seconds).
- Per bind, at most ``window`` submit_sm without their submit_sm_resp, and at most
  ``throughput`` submit_sm a second (aiolimiter).
- A long text is sent as concatenated parts with a user data header, or in one
  ``message_payload`` TLV (``long_messages = "payload"``); see smpp_text. All parts
  of one message go on one bind. The first part's SMSC id is the message's provider
  id; each part's receipt is held until every part has one, then one receipt for the
  message is reported: DELIVERED when every part was delivered, else the first
  part's failure.
- Receipts arrive as deliver_sm (esm_class 0x04). A receipt for an id this process
  does not know (its submit_sm_resp still on the way, or sent before a restart) is
  held ``orphan_grace`` seconds, then reported with the SMSC id alone, which the
  receipt recorder matches or parks like any webhook receipt.
- Any other deliver_sm is a mobile-originated message: it is handed to the
  ``on_inbound`` callable given at construction (after its concatenated parts are
  reassembled), as server.domain.inbound.InboundSms; without one it is logged and
  dropped.
- There is no status query over SMPP here (query_sm is not offered by the library):
  ``max_status_ids`` is 0 so the poller never asks, and ``query_status`` answers
  from the receipts this process has combined.

The password is passed to the library only; it is never logged or repr'd.

Library limitation: smpp34's Python client reports a refused bind_transceiver_resp
as "bind timed out". A bind that reached the SMSC over TCP but was not bound is
therefore reported as SMPP_BIND_REFUSED (final), a TCP failure as SMPP_NOT_BOUND
(retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import smpp34
from aiolimiter import AsyncLimiter

from server.domain.inbound import InboundSms
from server.domain.models import Channel, MessageStatus, OutboundMessage
from server.domain.ports import Capabilities, ProviderRef, Receipt, ReceiptSink, SendOutcome
from server.providers.smpp_text import (
    TLV_MESSAGE_PAYLOAD,
    Part,
    decode_text,
    is_receipt,
    parse_receipt,
    split_text,
    udh_parts,
)

log = logging.getLogger(__name__)

# submit_sm_resp command_status values worth sending again (later, or elsewhere).
RETRYABLE_STATUSES = {
    0x08: "ESME_RSYSERR",
    0x14: "ESME_RMSGQFUL",
    0x45: "ESME_RSUBMITFAIL",
    0x58: "ESME_RTHROTTLED",
    0x64: "ESME_RX_T_APPN",
    0x03: "ESME_RINVCMDID",  # generic_nack: the SMSC did not understand our PDU
}
FINAL_STATUSES = {
    0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR",
    0x01: "ESME_RINVMSGLEN",
    0x04: "ESME_RINVBNDSTS",
    0x66: "ESME_RX_R_APPN",
}
# Most octets of the bind and address fields, without their NUL (SMPP 3.4 5.2).
LIMITS = {"system_id": 15, "password": 8, "system_type": 12, "source_addr": 20}
MAX_SETTLED = 100_000  # combined receipts kept for query_status
MAX_GROUPS = 200_000  # parts awaiting their receipts (oldest dropped first)
MAX_MO_PARTS = 10_000  # inbound messages waiting for their other parts


InboundHook = Callable[[InboundSms], Awaitable[None]]


@dataclass(frozen=True)
class SmppConfig:
    name: str
    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    system_type: str = ""
    binds: int = 1
    window: int = 10
    throughput: float | None = None  # submit_sm a second, per bind
    timeout: float = 10.0  # seconds for a submit_sm_resp, and to wait for a bind
    source_addr: str = ""
    source_addr_ton: int = 5  # alphanumeric
    source_addr_npi: int = 0
    dest_addr_ton: int = 1  # international
    dest_addr_npi: int = 1  # E.164
    long_messages: str = "udh"  # "udh" or "payload" (message_payload TLV)
    registered_delivery: int = 1  # ask for a receipt of each final outcome
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    orphan_grace: float = 5.0
    templates: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # SMPP 3.4 5.2: C-Octet strings with their NUL (the library panics past them).
        for key, most in LIMITS.items():
            if len(str(getattr(self, key)).encode()) > most:
                raise ValueError(f"{key} is longer than SMPP 3.4 allows ({most} octets)")
        if self.long_messages not in ("udh", "payload"):
            raise ValueError('long_messages must be "udh" or "payload"')
        if self.binds < 1 or self.window < 1:
            raise ValueError("binds and window must be at least 1")


class _Retry(Exception):
    def __init__(self, code: str, final: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.final = final


@dataclass
class _Group:
    """The parts of one message and the receipts that came for them."""

    message_id: str
    ids: list[str]
    outcomes: dict[str, tuple[MessageStatus, str]] = field(default_factory=dict)


class _Bind:
    """One bind_transceiver, kept bound."""

    def __init__(self, transport: SmppTransport, index: int) -> None:
        self._transport = transport
        self.index = index
        config = transport.config
        self.window = asyncio.Semaphore(config.window)
        self.limiter = AsyncLimiter(config.throughput, 1) if config.throughput else None
        self.smsc: smpp34.Smsc | None = None
        self.bound = asyncio.Event()
        self._failed = asyncio.Event()  # set (and replaced) at each failed attempt
        self.in_flight = 0
        self.last_error = ""
        self.binds_made = 0
        self._client: smpp34.Client | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"smpp-bind-{self.index}")

    async def _run(self) -> None:
        config = self._transport.config
        delay = config.reconnect_min
        while True:
            client = smpp34.Client(
                config.host,
                config.port,
                config.system_id,
                config.password,
                bind_type="TRX",
                system_type=config.system_type,
                window_size=config.window,
                connect_timeout_ms=max(1, int(config.timeout * 1000)),
            )
            self._client = client
            try:
                smsc = await client.connect()
            except Exception as exc:  # the library's SmppError, or anything of the socket
                # Its text names the address and the failure, never the password.
                text = str(exc) if isinstance(exc, smpp34.SmppError) else type(exc).__name__
                self.last_error = (
                    "SMPP_BIND_REFUSED" if "bind" in text.lower() else "SMPP_NOT_BOUND"
                )
                log.warning(
                    "smpp %s bind %d: %s (%s); again in %.1f s",
                    self._transport.name,
                    self.index,
                    self.last_error,
                    text,
                    delay,
                )
                self._failed.set()
                self._failed = asyncio.Event()
                await self._stop_client(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.reconnect_max)
                continue
            self.smsc = smsc
            self.last_error = ""
            self.binds_made += 1
            self.bound.set()
            log.info("smpp %s bind %d bound", self._transport.name, self.index)
            try:
                while True:
                    try:
                        event = await smsc.next()
                    except smpp34.SmppError:
                        break
                    if isinstance(event, smpp34.Disconnected):
                        break
                    try:
                        await self._transport._on_deliver(event)
                    except Exception:
                        log.exception("smpp %s: a deliver_sm was not handled", self._transport.name)
            finally:
                self.bound.clear()
                self.smsc = None
            if self._closing:
                return
            log.warning(
                "smpp %s bind %d lost; again in %.1f s", self._transport.name, self.index, delay
            )
            self.last_error = "SMPP_CONNECTION"
            await self._stop_client(client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, config.reconnect_max)

    async def next_failure(self) -> None:
        """Returns when the next bind attempt fails."""
        await self._failed.wait()

    @staticmethod
    async def _stop_client(client: smpp34.Client) -> None:
        with contextlib.suppress(Exception):
            await client.stop()

    async def close(self) -> None:
        self._closing = True
        smsc = self.smsc
        if smsc is not None:  # unbind first: stopping the client leaves the socket open
            with contextlib.suppress(Exception):
                await asyncio.wait_for(smsc.unbind(), 1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._stop_client(self._client)
        self.bound.clear()
        self.smsc = None


class SmppTransport:
    capabilities = Capabilities(free_text=True, templates=True, max_status_ids=0)

    def __init__(
        self,
        config: SmppConfig,
        receipts: ReceiptSink,
        *,
        on_inbound: InboundHook | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._receipts = receipts
        self._on_inbound = on_inbound
        self._binds = [_Bind(self, i) for i in range(max(1, config.binds))]
        self._started = False
        self._turn = itertools.count()
        self._reference = itertools.count(1)
        self._groups: OrderedDict[str, _Group] = OrderedDict()  # SMSC id -> its message
        self._settled: OrderedDict[str, Receipt] = OrderedDict()  # our id -> receipt
        self._orphans: dict[str, tuple[MessageStatus, str, asyncio.TimerHandle]] = {}
        self._mo_parts: dict[tuple[str, int], dict[int, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # What went over the wire: submit_sm per message id (more than the parts: a
        # part sent again), and the messages the SMSC accepted.
        self.submitted: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()

    @property
    def binds(self) -> list[_Bind]:
        return self._binds

    def start(self) -> None:
        """Binds (in the background); the first send does it too."""
        if not self._started:
            self._started = True
            for bind in self._binds:
                bind.start()

    def can_carry(self, message: OutboundMessage) -> bool:
        return message.channel == Channel.SMS and bool(message.body)

    async def _a_bind(self) -> _Bind:
        self.start()
        bound = [b for b in self._binds if b.bound.is_set()]
        if not bound:
            # Until a bind is up, or each has failed once more (the library reports
            # a refused bind only when its connect timeout ends).
            waits = [asyncio.ensure_future(b.bound.wait()) for b in self._binds]
            everyone_tried = asyncio.ensure_future(self._all_tried())
            try:
                await asyncio.wait(
                    [*waits, everyone_tried],
                    timeout=2 * self.config.timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in [*waits, everyone_tried]:
                    w.cancel()
            bound = [b for b in self._binds if b.bound.is_set()]
        if not bound:
            errors = {b.last_error for b in self._binds if b.last_error}
            if errors == {"SMPP_BIND_REFUSED"}:
                raise _Retry("SMPP_BIND_REFUSED", final=True)
            raise _Retry("SMPP_NOT_BOUND")
        # The least busy bind; ties in turn.
        turn = next(self._turn)
        return min(
            bound,
            key=lambda b: (b.in_flight, (b.index - turn) % len(self._binds)),
        )

    async def _all_tried(self) -> None:
        await asyncio.gather(*(bind.next_failure() for bind in self._binds))

    async def send(self, message: OutboundMessage) -> SendOutcome:
        if not self.can_carry(message):
            return SendOutcome(accepted=False, error_code="SMPP_CANNOT_CARRY")
        try:
            parts = split_text(
                message.body,
                next(self._reference) % 256,
                use_payload=self.config.long_messages == "payload",
            )
        except ValueError:
            return SendOutcome(
                accepted=False, error_code="SMPP_TOO_LONG", final_status=MessageStatus.REJECTED
            )
        try:
            bind = await self._a_bind()
            ids = [await self._submit(bind, message, part) for part in parts]
        except _Retry as exc:
            if exc.final:
                return SendOutcome(
                    accepted=False, error_code=exc.code, final_status=MessageStatus.REJECTED
                )
            return SendOutcome(accepted=False, retryable=True, error_code=exc.code)
        self.accepted[message.id] += 1
        self._register(message.id, ids)
        return SendOutcome(accepted=True, provider_message_id=ids[0])

    async def _submit(self, bind: _Bind, message: OutboundMessage, part: Part) -> str:
        config = self.config
        tlvs = []
        if part.payload is not None:
            tlvs.append(smpp34.Tlv(TLV_MESSAGE_PAYLOAD, part.payload))
        bind.in_flight += 1
        try:
            async with bind.window:
                if bind.limiter is not None:
                    await bind.limiter.acquire()
                smsc = bind.smsc
                if smsc is None:
                    raise _Retry("SMPP_CONNECTION")
                self.submitted[message.id] += 1
                try:
                    resp = await asyncio.wait_for(
                        smsc.submit_sm(
                            message.to_number.lstrip("+"),
                            part.short_message,
                            source_addr=config.source_addr,
                            source_addr_ton=config.source_addr_ton,
                            source_addr_npi=config.source_addr_npi,
                            dest_addr_ton=config.dest_addr_ton,
                            dest_addr_npi=config.dest_addr_npi,
                            esm_class=part.esm_class,
                            registered_delivery=config.registered_delivery,
                            data_coding=part.data_coding,
                            tlvs=tlvs,
                        ),
                        config.timeout,
                    )
                except TimeoutError as exc:
                    raise _Retry("SMPP_TIMEOUT") from exc
                except smpp34.SmppError as exc:
                    raise _Retry("SMPP_CONNECTION") from exc
        finally:
            bind.in_flight -= 1
        status = resp.command_status
        if status == 0 and resp.message_id:
            return resp.message_id
        if status in RETRYABLE_STATUSES:
            raise _Retry(f"SMPP_{RETRYABLE_STATUSES[status]}")
        name = FINAL_STATUSES.get(status, f"STATUS_{status:#x}")
        if status == 0:
            name = "NO_MESSAGE_ID"
        raise _Retry(f"SMPP_{name}", final=True)

    def _register(self, message_id: str, ids: list[str]) -> None:
        group = _Group(message_id, ids)
        for smsc_id in ids:
            self._groups[smsc_id] = group
        while len(self._groups) > MAX_GROUPS:
            self._groups.popitem(last=False)
        for smsc_id in ids:
            orphan = self._orphans.pop(smsc_id, None)
            if orphan is not None:
                status, error, timer = orphan
                timer.cancel()
                self._part_settled(group, smsc_id, status, error)

    def _part_settled(self, group: _Group, smsc_id: str, status: MessageStatus, error: str) -> None:
        group.outcomes[smsc_id] = (status, error)
        if len(group.outcomes) < len(group.ids):
            return
        for part_id in group.ids:
            self._groups.pop(part_id, None)
        failed = [
            group.outcomes[i] for i in group.ids if group.outcomes[i][0] != MessageStatus.DELIVERED
        ]
        status, error = failed[0] if failed else (MessageStatus.DELIVERED, "")
        receipt = Receipt(
            self.name,
            group.message_id,
            status,
            error,
            provider_message_id=group.ids[0],
        )
        self._settled[group.message_id] = receipt
        while len(self._settled) > MAX_SETTLED:
            self._settled.popitem(last=False)
        self._report(receipt)

    def _report(self, receipt: Receipt) -> None:
        task = asyncio.create_task(self._receipts(receipt), name="smpp-receipt")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_deliver(self, event: Any) -> None:
        tlvs = {t.tag: t.value for t in event.tlvs}
        if is_receipt(event.esm_class):
            self._on_receipt(event.short_message, tlvs)
        else:
            await self._on_mo(event, tlvs)

    def _on_receipt(self, short_message: bytes, tlvs: dict[int, bytes]) -> None:
        parsed = parse_receipt(short_message, tlvs)
        if parsed is None:
            log.warning("smpp %s: a receipt without a message id", self.name)
            return
        status = parsed.status
        if status is None:
            return  # ENROUTE / ACCEPTD: nothing settled yet
        error = "" if status == MessageStatus.DELIVERED else f"SMPP_{parsed.stat}"
        if parsed.error and parsed.error.strip("0"):
            error = f"{error}:{parsed.error}" if error else ""
        group = self._groups.get(parsed.smsc_id)
        if group is not None:
            self._part_settled(group, parsed.smsc_id, status, error)
            return
        old = self._orphans.pop(parsed.smsc_id, None)
        if old is not None:
            old[2].cancel()
        timer = asyncio.get_running_loop().call_later(
            self.config.orphan_grace, self._release_orphan, parsed.smsc_id
        )
        self._orphans[parsed.smsc_id] = (status, error, timer)

    def _release_orphan(self, smsc_id: str) -> None:
        orphan = self._orphans.pop(smsc_id, None)
        if orphan is None:
            return
        status, error, _ = orphan
        self._report(Receipt(self.name, "", status, error, provider_message_id=smsc_id))

    async def _on_mo(self, event: Any, tlvs: dict[int, bytes]) -> None:
        data = tlvs.get(TLV_MESSAGE_PAYLOAD) or event.short_message
        sender = event.source_addr
        if event.source_addr_ton == 1 and sender and not sender.startswith("+"):
            sender = "+" + sender
        text: str | None
        if event.esm_class & 0x40:
            concat, body = udh_parts(data)
            text = decode_text(body, event.data_coding)
            if concat is not None and concat.total > 1:
                key = (sender, concat.reference)
                if key not in self._mo_parts and len(self._mo_parts) >= MAX_MO_PARTS:
                    self._mo_parts.pop(next(iter(self._mo_parts)))  # the oldest unfinished
                parts = self._mo_parts.setdefault(key, {})
                parts[concat.number] = text
                if len(parts) < concat.total:
                    return
                del self._mo_parts[key]
                text = "".join(parts[i] for i in sorted(parts))
        else:
            text = decode_text(data, event.data_coding)
        # The sender in E.164 with "+" when the SMSC says it is international.
        inbound = InboundSms(self.name, sender, event.destination_addr, text)
        if self._on_inbound is None:
            log.warning("smpp %s: an inbound message with no handler was dropped", self.name)
            return
        await self._on_inbound(inbound)

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        """The combined receipts this process has for ``refs`` (none are asked for)."""
        return [self._settled[r.message_id] for r in refs if r.message_id in self._settled]

    async def close(self) -> None:
        for _, _, timer in self._orphans.values():
            timer.cancel()
        for smsc_id in list(self._orphans):
            self._release_orphan(smsc_id)
        for bind in self._binds:
            await bind.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

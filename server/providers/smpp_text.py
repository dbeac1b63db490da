"""What an SMPP transport puts in and reads out of short messages, around the PDU codec
(smpp34 encodes and decodes the PDUs themselves).

- Outbound texts: GSM-7 (data_coding 0, the SMSC default alphabet, one septet an
  octet, extension characters escaped; the ``gsm0338`` codec) when every character
  has a GSM 03.38 code, else UCS-2 (data_coding 8, UTF-16BE). A text longer than one
  part is split as server.domain.segments counts it (153 septets or 67 units a part,
  never splitting an escape or a surrogate pair) and each part carries a
  concatenation user data header (3GPP TS 23.040 9.2.3.24.1: IEI 0x00, 8-bit
  reference), or the whole text goes in one ``message_payload`` TLV where the SMSC
  asks for that.
- Delivery receipts: the receipted_message_id and message_state TLVs when present,
  else the receipt text of SMPP 3.4 appendix B (``id:… stat:… err:…``).
- Mobile-originated texts: decoded by data_coding, concatenated parts (UDH IEI 0x00
  or 0x08) reassembled by the caller with ``udh_parts``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from server.domain.models import MessageStatus
from server.domain.segments import (
    GSM7_EXTENSION,
    GSM7_MULTI_PART,
    GSM7_SINGLE_PART,
    UCS2_MULTI_PART,
    UCS2_SINGLE_PART,
    encoding_of,
)

DC_DEFAULT = 0x00  # SMSC default alphabet (GSM-7 here)
DC_LATIN1 = 0x03
DC_UCS2 = 0x08
ESM_UDHI = 0x40  # esm_class: the short message starts with a user data header
ESM_RECEIPT_MASK = 0x3C  # esm_class message type bits
ESM_DELIVERY_RECEIPT = 0x04

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_MESSAGE_PAYLOAD = 0x0424

# message_state values (SMPP 3.4 5.2.28) and the receipt text's stat: words.
_STATES = {
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
_STATUS_OF_STAT = {
    "DELIVRD": MessageStatus.DELIVERED,
    "EXPIRED": MessageStatus.UNDELIVERED,
    "DELETED": MessageStatus.UNDELIVERED,
    "UNDELIV": MessageStatus.UNDELIVERED,
    "UNKNOWN": MessageStatus.UNDELIVERED,
    "REJECTD": MessageStatus.REJECTED,
}
_ID = re.compile(rb"id:(\S+)", re.IGNORECASE)
_STAT = re.compile(rb"stat:(\w+)", re.IGNORECASE)
_ERR = re.compile(rb"err:(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    """One submit_sm's worth of a text."""

    short_message: bytes
    data_coding: int
    esm_class: int = 0
    payload: bytes | None = None  # message_payload TLV (short_message then empty)


def encode_text(text: str) -> tuple[bytes, int]:
    """The text's bytes and its data_coding."""
    if encoding_of(text) == "GSM-7":
        return text.encode("gsm03.38"), DC_DEFAULT
    return text.encode("utf-16-be", "surrogatepass"), DC_UCS2


def _chunks(text: str, gsm: bool) -> list[str]:
    """Split ``text`` into parts of at most 153 septets / 67 UTF-16 units."""
    limit = GSM7_MULTI_PART if gsm else UCS2_MULTI_PART
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        wide = char in GSM7_EXTENSION if gsm else ord(char) > 0xFFFF
        cost = 2 if wide else 1
        if used + cost > limit:
            chunks.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += cost
    chunks.append("".join(current))
    return chunks


def split_text(text: str, reference: int, *, use_payload: bool = False) -> list[Part]:
    """The submit_sm parts of ``text``; ``reference`` (0..255) ties concatenated parts."""
    data, coding = encode_text(text)
    gsm = coding == DC_DEFAULT
    single = GSM7_SINGLE_PART if gsm else 2 * UCS2_SINGLE_PART
    if len(data) <= single:
        return [Part(data, coding)]
    if use_payload:
        return [Part(b"", coding, payload=data)]
    chunks = _chunks(text, gsm)
    if len(chunks) > 255:
        raise ValueError("text too long for concatenated SMS")
    total = len(chunks)
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        udh = bytes([0x05, 0x00, 0x03, reference & 0xFF, total, number])
        parts.append(Part(udh + encode_text_as(chunk, coding), coding, ESM_UDHI))
    return parts


def encode_text_as(text: str, coding: int) -> bytes:
    if coding == DC_DEFAULT:
        return text.encode("gsm03.38")
    return text.encode("utf-16-be", "surrogatepass")


def decode_text(data: bytes, coding: int) -> str:
    """An inbound short message's text by its data_coding (unknown codings: Latin-1)."""
    if coding == DC_UCS2:
        return data.decode("utf-16-be", "replace")
    if coding == DC_DEFAULT:
        try:
            return data.decode("gsm03.38")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return data.decode("latin-1")


@dataclass(frozen=True)
class Concatenated:
    reference: int
    total: int
    number: int


def udh_parts(short_message: bytes) -> tuple[Concatenated | None, bytes]:
    """Split a user data header off: its concatenation element (IEI 0x00 or 0x08), if
    any, and the text bytes after the header."""
    if not short_message:
        return None, short_message
    length = short_message[0]
    header, rest = short_message[1 : 1 + length], short_message[1 + length :]
    i = 0
    found = None
    while i + 1 < len(header):
        iei, size = header[i], header[i + 1]
        value = header[i + 2 : i + 2 + size]
        if iei == 0x00 and size == 3:
            found = Concatenated(value[0], value[1], value[2])
        elif iei == 0x08 and size == 4:
            found = Concatenated((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + size
    return found, rest


@dataclass(frozen=True)
class PartReceipt:
    """What one delivery receipt says about one submitted part."""

    smsc_id: str
    stat: str  # DELIVRD, UNDELIV, ... (SMPP 3.4 appendix B)
    error: str  # the receipt's err: field, "" if none

    @property
    def status(self) -> MessageStatus | None:
        """Our status, or None for a receipt that settles nothing (ENROUTE, ACCEPTD)."""
        return _STATUS_OF_STAT.get(self.stat)


def is_receipt(esm_class: int) -> bool:
    return esm_class & ESM_RECEIPT_MASK == ESM_DELIVERY_RECEIPT


def parse_receipt(short_message: bytes, tlvs: dict[int, bytes]) -> PartReceipt | None:
    """A delivery receipt's message id, state and error; None if it names no message."""
    raw_id = tlvs.get(TLV_RECEIPTED_MESSAGE_ID)
    smsc_id = raw_id.rstrip(b"\x00").decode("ascii", "replace") if raw_id else ""
    if not smsc_id:
        match = _ID.search(short_message)
        smsc_id = match.group(1).decode("ascii", "replace") if match else ""
    if not smsc_id:
        return None
    stat = ""
    state = tlvs.get(TLV_MESSAGE_STATE)
    if state:
        stat = _STATES.get(state[0], "")
    if not stat:
        match = _STAT.search(short_message)
        stat = match.group(1).decode("ascii", "replace").upper() if match else ""
    match = _ERR.search(short_message)
    error = match.group(1).decode("ascii", "replace") if match else ""
    return PartReceipt(smsc_id, stat, error)

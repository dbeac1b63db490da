"""How the commands print results: ``-o json`` (the default; proto3 JSON for API
results) or ``-o table`` (aligned columns for people), and how a failed call reads."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

FORMATS = ("json", "table")
Record = Message | Mapping[str, Any]


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="json",
        help="json (default; proto3 JSON) or table (aligned columns)",
    )


def as_dict(record: Record, *, for_table: bool = False, all_fields: bool = False) -> dict[str, Any]:
    """A plain dict of a record; proto messages as proto3 JSON (camelCase keys), or
    with their field names for a table; ``all_fields`` keeps fields at their default
    (``"valid": false``)."""
    if isinstance(record, Message):
        return json_format.MessageToDict(
            record,
            preserving_proto_field_name=for_table,
            always_print_fields_with_no_presence=all_fields,
        )
    return dict(record)


def cell(value: Any) -> str:
    """A table cell: text as it is, lists joined, anything else as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """Aligned lines: a header of the column names, then one line per row."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    header = [c.upper() for c in columns]
    return [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *cells)
    ]


class Output:
    """Prints one result, a list or a stream in the chosen format; every line is
    flushed, so ``smsgw watch | head`` sees events as they come."""

    def __init__(self, fmt: str = "json", stream: TextIO | None = None) -> None:
        self.format = fmt
        self._stream = stream
        self._stream_widths: list[int] | None = None

    @property
    def out(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def item(self, record: Record, *, compact: bool = False, all_fields: bool = False) -> None:
        """One result: indented JSON (compact: one line), or field/value lines."""
        if self.format == "table":
            values = as_dict(record, for_table=True, all_fields=all_fields)
            rows = [{"field": k, "value": v} for k, v in values.items()]
            for line in render_table(rows, ("field", "value"))[1:]:
                self._line(line)
            return
        values = as_dict(record, all_fields=all_fields)
        self._line(json.dumps(values, indent=None if compact else 2, ensure_ascii=False))

    def items(self, records: Sequence[Record], columns: Sequence[str]) -> None:
        """A list: one JSON object a line, or a table of ``columns``."""
        if self.format == "table":
            rows = [as_dict(r, for_table=True) for r in records]
            for line in render_table(rows, columns):
                self._line(line)
            return
        for record in records:
            self._line(json.dumps(as_dict(record), ensure_ascii=False))

    def event(self, record: Record, columns: Sequence[str]) -> None:
        """One record of a stream: a JSON line, or a table row (the header before the
        first; columns as wide as the header or the first row's value)."""
        if self.format != "table":
            self._line(json.dumps(as_dict(record), ensure_ascii=False))
            return
        row = as_dict(record, for_table=True)
        values = [cell(row.get(c)) for c in columns]
        if self._stream_widths is None:
            pairs = zip(columns, values, strict=True)
            self._stream_widths = [max(len(c), len(v)) for c, v in pairs]
            self._line(self._row([c.upper() for c in columns]))
        self._line(self._row(values))

    def _row(self, values: Sequence[str]) -> str:
        assert self._stream_widths is not None
        return "  ".join(
            v.ljust(w) for v, w in zip(values, self._stream_widths, strict=True)
        ).rstrip()


def describe_error(exc: grpc.aio.AioRpcError) -> str:
    """The code, message, reason and every bad field of a failed call."""
    lines = [f"smsgw: {exc.code().name}: {exc.details()}"]
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                lines.append(f"  reason: {info.reason}")
            elif detail.Unpack(bad):
                lines += [f"  {v.field}: {v.description}" for v in bad.field_violations]
            elif detail.Unpack(retry):
                wait = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
                lines.append(f"  retry after {wait:.1f} s")
    return "\n".join(lines)

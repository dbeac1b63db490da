"""Log lines are JSON objects naming the call and the work they are about."""

from __future__ import annotations

import contextvars
import io
import json
import logging

import pytest

from server.api.context import request_id_var, set_caller
from server.domain.messaging import Caller
from server.logs import JsonFormatter


@pytest.fixture
def lines() -> io.StringIO:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("smsgw.test")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return out


def test_a_line_carries_the_request_account_and_message(lines: io.StringIO) -> None:
    def in_a_call() -> None:  # as the interceptor sets them for a call
        request_id_var.set("req-1")
        set_caller(Caller(account_id=42, verified=True))
        logging.getLogger("smsgw.test").warning(
            "transport %s raised %s", "sky", "TimeoutError", extra={"message_id": "m1"}
        )

    contextvars.copy_context().run(in_a_call)
    entry = json.loads(lines.getvalue())
    assert entry["level"] == "WARNING"
    assert entry["msg"] == "transport sky raised TimeoutError"
    assert (entry["request_id"], entry["account_id"], entry["message_id"]) == ("req-1", 42, "m1")
    assert entry["ts"].endswith("+00:00")


def test_only_the_ids_given_appear(lines: io.StringIO) -> None:
    logging.getLogger("smsgw.test").info("batch accepted", extra={"batch_id": "b_1"})
    entry = json.loads(lines.getvalue())
    assert entry["batch_id"] == "b_1"
    assert not {"message_id", "verify_id", "request_id", "account_id"} & entry.keys()

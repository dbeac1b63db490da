"""The CLI's pure parts: tables, CSV numbers with their variables, argument parsing,
and telling a taken address from other start-up failures."""

from __future__ import annotations

import errno
import io
import socket

import pytest
from sms.v1 import batch_pb2, common_pb2

from server.cli import build_parser
from server.cli.batches import batch_request, read_csv
from server.cli.output import Output, render_table
from server.cli.serve import bind_problem, is_bind_failure
from server.cli.settings import UsageError, client_target


def test_a_table_aligns_columns_and_shows_lists_and_missing_values() -> None:
    rows: list[dict[str, object]] = [
        {"id": "1", "variables": ["name", "order"], "verified": True},
        {"id": "12345", "variables": [], "verified": None},
    ]
    assert render_table(rows, ("id", "variables", "verified")) == [
        "ID     VARIABLES   VERIFIED",
        "1      name,order  true",
        "12345              -",
    ]


def test_a_stream_as_a_table_prints_its_header_once() -> None:
    out = io.StringIO()
    printer = Output("table", out)
    for status in (common_pb2.BATCH_STATUS_EXECUTING, common_pb2.BATCH_STATUS_SUCCEEDED):
        printer.event(batch_pb2.Batch(task_id="b_1", total=3, status=status), ("task_id", "status"))
    assert out.getvalue().splitlines() == [
        "TASK_ID  STATUS",
        "b_1      BATCH_STATUS_EXECUTING",
        "b_1      BATCH_STATUS_SUCCEEDED",
    ]


def test_json_output_is_proto3_json() -> None:
    out = io.StringIO()
    Output("json", out).item(batch_pb2.Batch(task_id="b_1", total=3), compact=True)
    assert out.getvalue() == '{"taskId": "b_1", "total": 3}\n'


def test_csv_numbers_carry_their_columns_over_the_shared_values() -> None:
    text = 'name,Mobile,shop\nAda,+8613800138001,\n\n"Lin, Bo",+8613800138002,North\n'
    numbers, data = read_csv(text, {"shop": "Main", "greeting": "Hi"})
    assert numbers == ["+8613800138001", "+8613800138002"]
    assert data["+8613800138001"] == {"name": "Ada", "shop": "", "greeting": "Hi"}
    assert data["+8613800138002"] == {"name": "Lin, Bo", "shop": "North", "greeting": "Hi"}


def test_csv_without_a_number_column_reads_the_first_column() -> None:
    numbers, data = read_csv("to,code\n+8613800138001,A1\n", {})
    assert (numbers, data) == (["+8613800138001"], {"+8613800138001": {"code": "A1"}})


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "must name the columns"), ("number,name\n+86138,Ada,extra\n", "line 2: 3 values")],
)
def test_a_malformed_csv_is_a_usage_error(text: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        read_csv(text, {})


def test_batch_arguments_become_the_request() -> None:
    args = build_parser().parse_args(
        ["batch", "create", "--template-id", "7", "--number", "+8613800138001", "--data", "a=1"]
    )
    request = batch_request(args)
    assert request.template_id == 7 and list(request.numbers) == ["+8613800138001"]
    assert dict(request.template_data["+8613800138001"].values) == {"a": "1"}
    assert request.use_type == common_pb2.USE_TYPE_NOTIFICATION


def test_batch_needs_numbers_and_exactly_one_content() -> None:
    parse = build_parser().parse_args
    with pytest.raises(UsageError, match="--content or --template-id"):
        batch_request(parse(["batch", "create", "--number", "+8613800138001"]))
    with pytest.raises(UsageError, match="give numbers"):
        batch_request(parse(["batch", "create", "--content", "Hi"]))
    with pytest.raises(UsageError, match="NAME=VALUE"):
        batch_request(parse(["batch", "create", "--content", "x", "--number", "1", "--data", "x"]))


def test_the_client_dials_addr_then_smsgw_addr_then_the_servers_address() -> None:
    assert client_target("h:1", {"SMSGW_ADDR": "h:2"}) == "h:1"
    assert client_target(None, {"SMSGW_ADDR": "h:2", "SMSGW_GRPC_ADDR": "h:3"}) == "h:2"
    assert client_target(None, {"SMSGW_GRPC_ADDR": "0.0.0.0:50051"}) == "127.0.0.1:50051"


def test_a_listening_address_is_found_taken_and_a_free_one_is_not() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        assert bind_problem(taken) == "the address is already in use (another smsgw serve?)"
    assert bind_problem("127.0.0.1:0") is None


def test_bind_failures_are_told_from_other_start_up_errors() -> None:
    assert is_bind_failure(RuntimeError("Failed to bind to address 127.0.0.1:50051; set …"))
    assert is_bind_failure(OSError(errno.EADDRINUSE, "Address already in use"))
    assert not is_bind_failure(RuntimeError("something else"))
    assert not is_bind_failure(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))

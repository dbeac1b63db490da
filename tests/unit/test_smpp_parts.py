"""SMPP text handling around the PDU codec: receipts in TLV or text form, user data
headers, and the routing file's kind "smpp"."""

from __future__ import annotations

import tomllib

import pytest

from server.domain.models import MessageStatus
from server.domain.segments import count_segments
from server.providers.smpp_text import (
    TLV_MESSAGE_STATE,
    TLV_RECEIPTED_MESSAGE_ID,
    Concatenated,
    parse_receipt,
    split_text,
    udh_parts,
)
from server.routes_file import RoutingConfigError, parse_routing


def test_a_text_only_receipt_is_read_from_appendix_b_fields() -> None:
    text = (
        b"id:0A1B sub:001 dlvrd:000 submit date:2601011200 done date:2601011201"
        b" stat:EXPIRED err:027 text:Hi"
    )
    receipt = parse_receipt(text, {})
    assert receipt is not None
    assert (receipt.smsc_id, receipt.stat, receipt.error) == ("0A1B", "EXPIRED", "027")
    assert receipt.status == MessageStatus.UNDELIVERED


def test_tlvs_win_over_the_text_and_enroute_settles_nothing() -> None:
    tlvs = {TLV_RECEIPTED_MESSAGE_ID: b"77\x00", TLV_MESSAGE_STATE: bytes([8])}
    receipt = parse_receipt(b"id:other stat:DELIVRD", tlvs)
    assert receipt is not None
    assert (receipt.smsc_id, receipt.status) == ("77", MessageStatus.REJECTED)
    enroute = parse_receipt(b"id:5 stat:ENROUTE err:000", {})
    assert enroute is not None and enroute.status is None
    assert parse_receipt(b"no id here", {}) is None


@pytest.mark.parametrize(
    "text",
    ["a" * 160, "a" * 161, "€" * 80, "€" * 81, "中" * 70, "中" * 71, "😀" * 40, "x" * 153 + "€"],
)
def test_parts_match_the_segment_count_callers_are_charged_for(text: str) -> None:
    assert len(split_text(text, 1)) == count_segments(text)


def test_a_user_data_header_is_read_with_8_and_16_bit_references() -> None:
    assert udh_parts(bytes([5, 0, 3, 9, 2, 1]) + b"hi") == (Concatenated(9, 2, 1), b"hi")
    assert udh_parts(bytes([6, 8, 4, 1, 2, 3, 2]) + b"yo") == (Concatenated(258, 3, 2), b"yo")


SMPP = """
[providers.smsc]
kind = "smpp"
base_url = "smpp://smsc.example.net:2775"
credentials = { system_id = "SMSC_ID", password = "SMSC_PW" }
options = { binds = 2, window = 20, throughput = 50, system_type = "SMSGW" }
"""
ENV = {"SMSC_ID": "acme", "SMSC_PW": "pw123456"}


def test_an_smpp_provider_parses_with_its_credentials_from_env() -> None:
    (spec,) = parse_routing(tomllib.loads(SMPP), ENV).providers
    assert (spec.kind, spec.base_url) == ("smpp", "smpp://smsc.example.net:2775")
    assert dict(spec.credentials) == {"system_id": "acme", "password": "pw123456"}
    assert "pw123456" not in repr(spec)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (('"smpp://smsc.example.net:2775"', '"http://smsc.example.net"'), "base_url"),
        (('"smpp://smsc.example.net:2775"', '"smpp://smsc.example.net"'), "base_url"),
        (("binds = 2", "binds = 0"), "options.binds"),
        (("throughput = 50", 'throughput = "fast"'), "options.throughput"),
        (("window = 20", "windw = 20"), "unknown keys: windw"),
    ],
)
def test_a_bad_smpp_provider_names_the_field(change: tuple[str, str], named: str) -> None:
    with pytest.raises(RoutingConfigError, match=named):
        parse_routing(tomllib.loads(SMPP.replace(*change)), ENV)


def test_a_password_longer_than_smpp_allows_is_refused_without_showing_it() -> None:
    with pytest.raises(RoutingConfigError, match="password") as info:
        parse_routing(tomllib.loads(SMPP), {**ENV, "SMSC_PW": "much-too-long"})
    assert "much-too-long" not in str(info.value)

"""Verification codes leave the outbox sealed and are opened by the domain, which
holds the key: the dispatcher gets the code in place, or a message it must fail."""

from __future__ import annotations

from datetime import UTC, datetime

from server.domain.codes import CodeKeys
from server.domain.models import CODE_MARK, OutboundMessage, UseType
from server.domain.outbox_codes import open_claimed
from server.domain.ports import ClaimedMessage

KEY = b"k" * 32


def _claimed(sealed: bytes | None) -> ClaimedMessage:
    message = OutboundMessage(
        "m_1",
        1,
        "+4915112345678",
        f"Your code is {CODE_MARK}",
        UseType.VERIFICATION,
        0,
        data={"code": CODE_MARK, "app": "Shop"},
    )
    return ClaimedMessage(
        message,
        priority=0,
        created_at=datetime.now(UTC),
        code_unavailable=sealed is not None,
        sealed_code=sealed,
    )


def test_a_sealed_code_is_opened_into_the_text_and_the_template_values() -> None:
    opened = open_claimed(_claimed(CodeKeys(KEY).seal("4711")), CodeKeys(KEY))
    assert opened.message.body == "Your code is 4711"
    assert opened.message.data == {"code": "4711", "app": "Shop"}
    assert opened.message.code == "4711"
    assert not opened.code_unavailable and opened.sealed_code is None


def test_a_code_sealed_under_another_key_stays_unavailable() -> None:
    claimed = _claimed(CodeKeys(b"y" * 32).seal("4711"))
    opened = open_claimed(claimed, CodeKeys(KEY))
    assert opened.code_unavailable
    assert "4711" not in opened.message.body and opened.message.code is None


def test_a_message_without_a_code_is_left_as_it_is() -> None:
    claimed = _claimed(None)
    assert open_claimed(claimed, CodeKeys(KEY)) == claimed
    assert not claimed.code_unavailable

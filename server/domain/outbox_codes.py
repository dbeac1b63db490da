"""Verification codes opened on the way out of the outbox.

The outbox keeps a code message's code sealed (``CodeKeys.seal``) and its text with
CODE_MARK where the code goes; the store never holds the key. ``CodeOpeningOutbox``
is the Outbox the dispatcher reads: each claimed message comes with its code put in
place, or marked ``code_unavailable`` when this server's key cannot open it (sealed
under another SMSGW_SECRET_KEY).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from server.domain.codes import CodeKeys
from server.domain.models import CODE_MARK
from server.domain.ports import ClaimedMessage, Outbox, Transition


def open_claimed(claimed: ClaimedMessage, codes: CodeKeys) -> ClaimedMessage:
    """``claimed`` with its sealed code opened into the message (text, template
    values, ``code``), or still ``code_unavailable`` when ``codes`` cannot open it;
    unchanged when it carries none."""
    if claimed.sealed_code is None:
        return claimed
    code = codes.unseal(claimed.sealed_code)
    if code is None:
        return replace(claimed, code_unavailable=True)
    message = claimed.message
    opened = replace(
        message,
        body=message.body.replace(CODE_MARK, code),
        data={k: code if v == CODE_MARK else v for k, v in message.data.items()},
        code=code,
    )
    return replace(claimed, message=opened, sealed_code=None, code_unavailable=False)


class CodeOpeningOutbox:
    """An Outbox whose claims come with their verification codes opened."""

    def __init__(self, outbox: Outbox, codes: CodeKeys) -> None:
        self._outbox = outbox
        self._codes = codes

    async def claim_due(
        self,
        limit: int,
        lease_seconds: float,
        *,
        urgent_only: bool = False,
        urgent_grace: float = 0.0,
    ) -> list[ClaimedMessage]:
        claimed = await self._outbox.claim_due(
            limit, lease_seconds, urgent_only=urgent_only, urgent_grace=urgent_grace
        )
        return [open_claimed(c, self._codes) for c in claimed]

    async def apply(self, transitions: Sequence[Transition]) -> None:
        await self._outbox.apply(transitions)

    async def release(self, message_ids: Sequence[str]) -> None:
        await self._outbox.release(message_ids)

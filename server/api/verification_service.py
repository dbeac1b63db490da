"""sms.v1.VerificationService."""

from __future__ import annotations

from typing import Any

import grpc
from sms.v1 import common_pb2, verification_pb2, verification_pb2_grpc

from server.api import convert
from server.api.context import current_caller
from server.domain.models import Channel
from server.domain.verification import SendVerificationCommand, Verifications

Context = grpc.aio.ServicerContext[Any, Any]


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(self, verifications: Verifications) -> None:
        self._verifications = verifications

    async def SendVerification(
        self, request: verification_pb2.SendVerificationRequest, context: Context
    ) -> verification_pb2.SendVerificationResponse:
        sent = await self._verifications.send(
            current_caller(),
            SendVerificationCommand(
                mobile=request.mobile,
                code_length=request.code_length,
                expire_minutes=request.expire_minutes,
                scene=request.scene,
                template_id=request.template_id or None,
                channel=convert.enum_value(Channel, request.channel, Channel.UNSPECIFIED),
                code=request.code,
                request_id=request.request_id,
                reference=request.reference,
                metadata=dict(request.metadata),
            ),
        )
        return verification_pb2.SendVerificationResponse(
            verify_id=sent.verify_id,
            expire_time=convert.timestamp(sent.expire_time),
            message_id=sent.message_id,
        )

    async def CheckVerification(
        self, request: verification_pb2.CheckVerificationRequest, context: Context
    ) -> verification_pb2.CheckVerificationResponse:
        checked = await self._verifications.check(
            current_caller(), request.verify_id, request.mobile, request.code
        )
        return verification_pb2.CheckVerificationResponse(
            valid=checked.valid,
            remaining_attempts=checked.remaining_attempts,
            state=common_pb2.VerificationState.ValueType(int(checked.state)),
        )

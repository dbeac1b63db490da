"""The gRPC server the sms.v1 services run on: its options, and reflection."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from sms.v1 import (
    account_pb2,
    batch_pb2,
    console_pb2,
    inbound_pb2,
    message_pb2,
    suppression_pb2,
    template_pb2,
    verification_pb2,
    webhook_pb2,
)

# The sms.v1 services this server answers (health and reflection aside).
SERVICE_NAMES = (
    message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name,
    verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name,
    batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name,
    template_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
    webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    suppression_pb2.DESCRIPTOR.services_by_name["SuppressionService"].full_name,
    inbound_pb2.DESCRIPTOR.services_by_name["InboundService"].full_name,
    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    console_pb2.DESCRIPTOR.services_by_name["ConsoleService"].full_name,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def grpc_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor], *, shared_port: bool = False
) -> grpc.aio.Server:
    """A server (no port yet) that runs every call through ``interceptors``, in order.
    ``shared_port``: its port is shared with the other processes of one ``smsgw serve``
    (SMSGW_PROCESSES, SO_REUSEPORT: the kernel spreads connections over them)."""
    return grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Alone, a second server on a taken port fails to bind instead of sharing it.
            ("grpc.so_reuseport", 1 if shared_port else 0),
        ],
    )


def enable_reflection(server: grpc.aio.Server) -> None:
    """Server reflection over the sms.v1 services, health and reflection itself."""
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

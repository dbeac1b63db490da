"""Builds transports from provider specs (the only place that knows every kind)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from server.domain.inbound import InboundSms
from server.domain.ports import ReceiptSink, Transport
from server.providers.loopback import LoopbackConfig, LoopbackTransport
from server.routes_file import ProviderSpec


def build_transport(
    spec: ProviderSpec,
    *,
    receipts: ReceiptSink,
    loopback: LoopbackConfig,
    inbound: Callable[[InboundSms], Awaitable[None]] | None = None,
) -> Transport:
    """``inbound`` takes the messages from recipients of transports that receive them
    over their own connection (SMPP deliver_sm)."""
    c = spec.credentials
    common = {
        "name": spec.name,
        "base_url": spec.base_url,
        "timeout": spec.timeout_seconds,
        "templates": dict(spec.templates),
        **spec.options,
    }
    if spec.kind == "loopback":
        return LoopbackTransport(loopback, receipts, name=spec.name)
    if spec.kind == "skynoo":
        # Single sends, and batch tasks for the dispatcher's bulk groups (BulkTransport).
        from server.providers.skynoo import SkynooConfig
        from server.providers.skynoo_bulk import SkynooBulkTransport

        return SkynooBulkTransport(
            SkynooConfig(api_key=c["api_key"], api_secret=c["api_secret"], **common)
        )
    if spec.kind == "sendcloud":
        from server.providers.sendcloud import SendCloudConfig, SendCloudTransport

        return SendCloudTransport(
            SendCloudConfig(sms_user=c["sms_user"], sms_key=c["sms_key"], **common)
        )
    if spec.kind == "sendsms":
        from server.providers.sendsms import SendsmsConfig, SendsmsTransport

        return SendsmsTransport(
            SendsmsConfig(client_id=c["client_id"], passcode=c["passcode"], **common)
        )
    if spec.kind == "twilio":
        from server.providers.twilio import TwilioConfig, TwilioTransport

        return TwilioTransport(
            TwilioConfig(account_sid=c["account_sid"], auth_token=c["auth_token"], **common)
        )
    if spec.kind == "http":
        from server.providers.generic_http import GenericHttpTransport

        return GenericHttpTransport(
            spec.name, spec.base_url, c, spec.options, timeout=spec.timeout_seconds
        )
    if spec.kind == "smpp":
        from server.providers.smpp import SmppTransport
        from server.providers.smpp_config import parse_smpp

        smpp = SmppTransport(
            parse_smpp(
                spec.name,
                spec.base_url,
                c,
                spec.options,
                timeout=spec.timeout_seconds,
                templates=spec.templates,
            ),
            receipts,
            on_inbound=inbound,
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # bound by its first send
        else:
            smpp.start()  # bound now: receipts and inbound messages arrive unasked
        return smpp
    raise ValueError(f"unknown provider kind {spec.kind!r}")

"""The routing file's ``kind = "smpp"`` provider, checked into an SmppConfig.

    [providers.smsc1]
    kind = "smpp"
    base_url = "smpp://smsc.example.net:2775"
    credentials = { system_id = "SMSC1_SYSTEM_ID", password = "SMSC1_PASSWORD" }  # env vars
    timeout_seconds = 10                 # submit_sm_resp wait, and the bind wait of a send
    options = { system_type = "SMSGW", binds = 2, window = 10, throughput = 50,
                source_addr = "ACME", long_messages = "udh" }

Options (all optional): system_type, binds (bind_transceivers, 1), window (submit_sm
without an answer per bind, 10), throughput (submit_sm a second per bind, none),
source_addr, source_addr_ton (5), source_addr_npi (0), dest_addr_ton (1),
dest_addr_npi (1), long_messages ("udh" or "payload"), registered_delivery (1),
reconnect_min / reconnect_max (seconds, 0.5 / 30).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from server.providers.smpp import SmppConfig

_INTS = {
    "binds": (1, 64),
    "window": (1, 1000),
    "source_addr_ton": (0, 6),
    "source_addr_npi": (0, 18),
    "dest_addr_ton": (0, 6),
    "dest_addr_npi": (0, 18),
    "registered_delivery": (0, 31),
}
_FLOATS = {
    "throughput": (0.01, 100_000),
    "reconnect_min": (0.01, 600),
    "reconnect_max": (0.01, 3600),
}
_STRINGS = ("system_type", "source_addr", "long_messages")


class SmppConfigError(ValueError):
    """The message names the field."""


def parse_smpp(
    name: str,
    base_url: str,
    credentials: Mapping[str, str],
    options: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    templates: Mapping[str, str] | None = None,
) -> SmppConfig:
    where = f"providers.{name}"
    url = urlsplit(base_url)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "smpp" or not url.hostname or port is None:
        raise SmppConfigError(f'{where}.base_url must be "smpp://HOST:PORT"')
    unknown = set(options) - set(_INTS) - set(_FLOATS) - set(_STRINGS)
    if unknown:
        raise SmppConfigError(f"{where}.options has unknown keys: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, (low, high) in _INTS.items():
        if key in options:
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SmppConfigError(f"{where}.options.{key} must be a whole number {low}..{high}")
            values[key] = value
    for key, (least, most) in _FLOATS.items():
        if key in options:
            number = options[key]
            if (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not least <= number <= most
            ):
                raise SmppConfigError(f"{where}.options.{key} must be a number {least}..{most}")
            values[key] = float(number)
    for key in _STRINGS:
        if key in options:
            if not isinstance(options[key], str):
                raise SmppConfigError(f"{where}.options.{key} must be a string")
            values[key] = options[key]
    try:
        return SmppConfig(
            name=name,
            host=url.hostname,
            port=port,
            system_id=credentials["system_id"],
            password=credentials["password"],
            timeout=timeout,
            templates=dict(templates or {}),
            **values,
        )
    except ValueError as exc:  # the field name is in the message
        raise SmppConfigError(f"{where}: {exc}") from exc

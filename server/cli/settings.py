"""What the commands read from the environment.

The commands that run or manage the server (serve, migrate, healthcheck, account,
credential) read the server's :class:`Settings`; the client commands read only the
address (``--addr``, else ``SMSGW_ADDR``, else ``SMSGW_GRPC_ADDR``), the credential
(``SMSGW_API_KEY``/``SMSGW_API_SECRET``: environment only, so the secret stays out of
shell history and the process list) and the TLS files (``SMSGW_TLS_CA``, …).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import grpc

from server.config import ConfigError, Settings
from server.logs import configure_logging
from server.tls import TlsConfigError, client_channel


class UsageError(Exception):
    """A problem found before any work is done: the command prints it and exits 2."""


def server_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The server's settings from the environment, with logging configured from them.

    The one place the server-side commands load their settings."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    configure_logging(settings.log_level)
    return settings


def dialable(listen_addr: str) -> str:
    """The address a client dials to reach a server listening on ``listen_addr`` (a
    wildcard host means this machine)."""
    host, _, port = listen_addr.rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '::') else host}:{port}"


def client_target(addr: str | None, env: Mapping[str, str]) -> str:
    return addr or env.get("SMSGW_ADDR") or dialable(env.get("SMSGW_GRPC_ADDR", "127.0.0.1:50051"))


def client_metadata(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The Basic ``authorization`` metadata from SMSGW_API_KEY and SMSGW_API_SECRET."""
    key, secret = env.get("SMSGW_API_KEY"), env.get("SMSGW_API_SECRET")
    if not key or not secret:
        raise UsageError(
            "set SMSGW_API_KEY and SMSGW_API_SECRET (smsgw account create prints them)"
        )
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


def open_channel(target: str, env: Mapping[str, str]) -> grpc.aio.Channel:
    try:
        return client_channel(target, env)
    except TlsConfigError as exc:
        raise UsageError(str(exc)) from None

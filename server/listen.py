"""Binding the gateway's listening sockets (gRPC, HTTP) to the configured addresses.

A failure raises OSError (or grpc's RuntimeError "Failed to bind to address"),
which ``smsgw serve`` turns into which address is taken and which variable moves it.
"""

from __future__ import annotations

import logging
import socket

import grpc

from server.tls import ServerTls

log = logging.getLogger(__name__)


def listen_grpc(server: grpc.aio.Server, addr: str, tls: ServerTls | None) -> int:
    """Adds the port ``addr`` (host:port; port 0 picks one) to ``server``, with TLS
    when configured; returns the port bound."""
    if tls is None:
        port = server.add_insecure_port(addr)
    else:
        port = server.add_secure_port(addr, tls.credentials())
    if port == 0:
        raise OSError(f"cannot listen on {addr}")
    if tls is not None:
        log.info("gRPC port uses %s", tls.describe())
    return port


def bind_http(addr: str, *, shared: bool = False) -> socket.socket:
    """A TCP socket bound to ``addr`` (host:port, IPv6 hosts bracketed or not);
    ``shared``: with SO_REUSEPORT, so that the processes of one ``smsgw serve``
    (SMSGW_PROCESSES) can all bind the port and the kernel spreads connections."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
    except BaseException:
        sock.close()
        raise
    return sock

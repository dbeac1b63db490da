"""TLS for the gRPC port: the PEM files named by SMSGW_TLS_* (read once at start-up),
the server's credentials, and the channel `smsgw healthcheck` opens to a TLS server.

Key material is kept out of reprs and never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization


class TlsConfigError(ValueError):
    """A TLS variable is missing its pair or names a bad file (the message names it)."""


def read_pem(env: Mapping[str, str], name: str, what: str) -> bytes | None:
    """The bytes of the PEM file the variable ``name`` points at, or None if unset."""
    path = env.get(name)
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{name}: cannot read {path} ({exc.strerror or exc})") from exc
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{name}: {path} is not a PEM {what}")
    return data


def _certificates(name: str, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsConfigError(f"{name} holds no valid PEM certificate") from exc


def _check_key_matches(cert_chain: bytes, private_key: bytes) -> None:
    leaf = _certificates("SMSGW_TLS_CERT", cert_chain)[0]
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except TypeError as exc:
        raise TlsConfigError("SMSGW_TLS_KEY is encrypted; gRPC needs an unencrypted key") from exc
    except ValueError as exc:
        raise TlsConfigError("SMSGW_TLS_KEY holds no valid PEM private key") from exc
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsConfigError("SMSGW_TLS_KEY does not match the certificate in SMSGW_TLS_CERT")


@dataclass(frozen=True)
class ServerTls:
    """The gRPC port's certificate chain and key; with ``client_ca``, mutual TLS."""

    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerTls | None:
        cert = read_pem(env, "SMSGW_TLS_CERT", "certificate chain")
        key = read_pem(env, "SMSGW_TLS_KEY", "private key")
        client_ca = read_pem(env, "SMSGW_TLS_CLIENT_CA", "CA bundle")
        if cert is None and key is not None:
            raise TlsConfigError("SMSGW_TLS_KEY is set but SMSGW_TLS_CERT is not; set both")
        if key is None and cert is not None:
            raise TlsConfigError("SMSGW_TLS_CERT is set but SMSGW_TLS_KEY is not; set both")
        if cert is None or key is None:
            if client_ca is not None:
                raise TlsConfigError(
                    "SMSGW_TLS_CLIENT_CA needs TLS: set SMSGW_TLS_CERT and SMSGW_TLS_KEY too"
                )
            return None
        _check_key_matches(cert, key)
        if client_ca is not None:
            _certificates("SMSGW_TLS_CLIENT_CA", client_ca)
        return cls(cert, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def describe(self) -> str:
        return "mutual TLS (client certificates required)" if self.mutual else "TLS"


def healthcheck_channel(
    target: str, tls: ServerTls | None, env: Mapping[str, str]
) -> grpc.aio.Channel:
    """A channel to our own gRPC port: plaintext, or TLS trusting SMSGW_TLS_CA (else
    the server certificate itself), presenting SMSGW_TLS_CLIENT_CERT/KEY if set."""
    if tls is None:
        return grpc.aio.insecure_channel(target)
    return client_channel(target, env, default_roots=tls.cert_chain)


def client_channel(
    target: str, env: Mapping[str, str], default_roots: bytes | None = None
) -> grpc.aio.Channel:
    """A client channel as the environment says: TLS trusting SMSGW_TLS_CA (or
    ``default_roots``), with SMSGW_TLS_CLIENT_CERT/KEY for mutual TLS and
    SMSGW_TLS_SERVER_NAME to verify against; plaintext when there is nothing to trust."""
    roots = read_pem(env, "SMSGW_TLS_CA", "CA bundle") or default_roots
    cert = read_pem(env, "SMSGW_TLS_CLIENT_CERT", "certificate chain")
    key = read_pem(env, "SMSGW_TLS_CLIENT_KEY", "private key")
    if (cert is None) != (key is None):
        raise TlsConfigError("set both SMSGW_TLS_CLIENT_CERT and SMSGW_TLS_CLIENT_KEY, or neither")
    if roots is None:
        return grpc.aio.insecure_channel(target)
    server_name = env.get("SMSGW_TLS_SERVER_NAME")
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    credentials = grpc.ssl_channel_credentials(roots, key, cert)
    return grpc.aio.secure_channel(target, credentials, options=options)

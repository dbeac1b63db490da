"""SMSGW_TLS_* settings: what is accepted, and errors that name the variable to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, Settings
from tests.certs import LOCAL_NAMES, Authority, Pem


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(ca: Authority) -> Pem:
    return ca.issue("server", server_names=LOCAL_NAMES)


def test_no_tls_variables_mean_plaintext() -> None:
    assert Settings.from_env({}).tls is None


def test_cert_and_key_give_tls_and_client_ca_gives_mutual_tls(ca: Authority, server: Pem) -> None:
    env = {"SMSGW_TLS_CERT": str(server.cert_path), "SMSGW_TLS_KEY": str(server.key_path)}
    tls = Settings.from_env(env).tls
    assert tls is not None and not tls.mutual
    assert (tls.cert_chain, tls.private_key) == (server.cert, server.key)
    mutual = Settings.from_env({**env, "SMSGW_TLS_CLIENT_CA": str(ca.pem.cert_path)})
    assert mutual.tls is not None and mutual.tls.mutual
    assert b"PRIVATE KEY" not in repr(mutual).encode()
    assert "PRIVATE KEY" not in repr(mutual.tls)


@pytest.mark.parametrize(
    ("names", "missing"),
    [
        (("SMSGW_TLS_CERT",), "SMSGW_TLS_KEY"),
        (("SMSGW_TLS_KEY",), "SMSGW_TLS_CERT"),
        (("SMSGW_TLS_CLIENT_CA",), "SMSGW_TLS_CLIENT_CA"),
    ],
)
def test_a_variable_without_its_partner_is_refused(
    ca: Authority, server: Pem, names: tuple[str, ...], missing: str
) -> None:
    paths = {
        "SMSGW_TLS_CERT": server.cert_path,
        "SMSGW_TLS_KEY": server.key_path,
        "SMSGW_TLS_CLIENT_CA": ca.pem.cert_path,
    }
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env({name: str(paths[name]) for name in names})


def test_client_ca_without_cert_and_key_says_tls_is_needed(ca: Authority) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SMSGW_TLS_CLIENT_CA": str(ca.pem.cert_path)})
    assert "SMSGW_TLS_CLIENT_CA" in str(caught.value)
    assert "SMSGW_TLS_CERT" in str(caught.value)


@pytest.mark.parametrize("variable", ["SMSGW_TLS_CERT", "SMSGW_TLS_KEY", "SMSGW_TLS_CLIENT_CA"])
def test_an_unreadable_file_names_its_variable(
    ca: Authority, server: Pem, tmp_path: Path, variable: str
) -> None:
    env = {
        "SMSGW_TLS_CERT": str(server.cert_path),
        "SMSGW_TLS_KEY": str(server.key_path),
        "SMSGW_TLS_CLIENT_CA": str(ca.pem.cert_path),
        variable: str(tmp_path / "missing.pem"),
    }
    with pytest.raises(ConfigError, match=f"^{variable}: cannot read .*missing.pem"):
        Settings.from_env(env)


def test_a_file_that_is_not_pem_names_its_variable(server: Pem, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^SMSGW_TLS_CERT: .* is not a PEM"):
        Settings.from_env({"SMSGW_TLS_CERT": str(junk), "SMSGW_TLS_KEY": str(server.key_path)})


def test_a_key_that_does_not_match_the_certificate_is_refused(ca: Authority, server: Pem) -> None:
    env = {"SMSGW_TLS_CERT": str(server.cert_path), "SMSGW_TLS_KEY": str(ca.pem.key_path)}
    with pytest.raises(ConfigError, match="SMSGW_TLS_KEY does not match"):
        Settings.from_env(env)

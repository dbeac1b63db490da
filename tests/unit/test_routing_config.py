"""The providers/routes config: valid files parse, bad ones name the field."""

from __future__ import annotations

import tomllib

import pytest

from server.domain.models import UseType
from server.routes_file import DEFAULT_ROUTING, RoutingConfigError, parse_routing

GOOD = """
[providers.sky]
kind = "skynoo"
base_url = "https://api.skynoo.example/"
credentials = { api_key = "SKY_KEY", api_secret = "SKY_SECRET" }
rate_per_second = 20
templates = { order_shipped = 15 }

[providers.lb]
kind = "loopback"

[[routes]]
prefixes = ["+86"]
use_types = ["verification", "notification"]
providers = ["sky", "lb"]
weights = [3, 1]

[[routes]]
providers = ["lb"]
"""
ENV = {"SKY_KEY": "app_1", "SKY_SECRET": "sec_2"}


def test_a_full_config_parses_with_credentials_from_env() -> None:
    config = parse_routing(tomllib.loads(GOOD), ENV)
    sky, lb = config.providers
    assert (sky.name, sky.kind, sky.base_url) == ("sky", "skynoo", "https://api.skynoo.example")
    assert dict(sky.credentials) == {"api_key": "app_1", "api_secret": "sec_2"}
    assert dict(sky.templates) == {"order_shipped": "15"}
    assert sky.rate_per_second == 20
    assert "sec_2" not in repr(sky)
    first = config.routes[0]
    assert first.providers == ("sky", "lb") and first.weights == (3.0, 1.0)
    assert first.use_types == {UseType.VERIFICATION, UseType.NOTIFICATION}
    assert lb.kind == "loopback"


def test_no_providers_means_loopback_only() -> None:
    assert parse_routing({}, {}) == DEFAULT_ROUTING


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('kind = "skynoo"', 'kind = "smoke"'), "providers.sky.kind"),
        (lambda t: t.replace("https://api.skynoo.example/", "ftp://x"), "providers.sky.base_url"),
        (lambda t: t.replace('providers = ["lb"]', 'providers = ["nope"]'), "unknown provider"),
        (lambda t: t.replace('prefixes = ["+86"]', 'prefixes = ["86"]'), "routes[0].prefixes"),
        (lambda t: t.replace("weights = [3, 1]", "weights = [3]"), "routes[0].weights"),
        (lambda t: t.replace('"verification", ', '"spam", '), "routes[0].use_types"),
        (lambda t: t.replace("rate_per_second = 20", "rate_per_second = -1"), "rate_per_second"),
        (lambda t: t.replace("templates =", "tempaltes ="), "unknown keys: tempaltes"),
    ],
)
def test_bad_config_names_the_field(change, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RoutingConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_routing(tomllib.loads(change(GOOD)), ENV)


def test_a_missing_secret_variable_is_named() -> None:
    with pytest.raises(RoutingConfigError, match="SKY_SECRET is not set"):
        parse_routing(tomllib.loads(GOOD), {"SKY_KEY": "x"})

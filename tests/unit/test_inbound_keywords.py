"""Keywords of inbound messages and the routing file's [inbound] table."""

from __future__ import annotations

import pytest

from server.domain.inbound import ENGLISH, InboundConfig, Keyword
from server.routes_file import RoutingConfigError, parse_routing


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("STOP", Keyword.STOP),
        ("  stop\n", Keyword.STOP),
        ("Unsubscribe", Keyword.STOP),
        ("stopall", Keyword.STOP),
        ("quit", Keyword.STOP),
        ("unstop", Keyword.START),
        ("Start", Keyword.START),
        ("info", Keyword.HELP),
        ("stop it", Keyword.NONE),
        ("please stop", Keyword.NONE),
        ("", Keyword.NONE),
    ],
)
def test_english_keywords_match_the_whole_text_in_any_case(text: str, keyword: Keyword) -> None:
    assert InboundConfig().keyword(text)[0] == keyword


def test_help_answers_with_its_languages_reply_or_the_first_one() -> None:
    config = parse_routing(
        {
            "inbound": {
                "languages": {
                    "en": {"help_reply": "Reply STOP to opt out."},
                    "fr": {"stop": ["arret"], "help": ["aide"]},
                }
            }
        },
        env={},
    ).inbound
    assert config.keyword("HELP") == (Keyword.HELP, "Reply STOP to opt out.")
    assert config.keyword("Aide") == (Keyword.HELP, "Reply STOP to opt out.")
    assert config.keyword("ARRET")[0] == Keyword.STOP
    # English keeps its default words when its table gives only the reply.
    assert config.languages["en"].stop == ENGLISH.stop


def test_owners_name_an_account_per_receiving_number() -> None:
    config = parse_routing({"inbound": {"owners": {"+15005550006": 7}}}, env={}).inbound
    assert config.owners == {"+15005550006": 7}


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"owners": {"+15005550006": "acme"}}, "inbound.owners.+15005550006"),
        ({"owners": {"not a number": 1}}, "inbound.owners"),
        ({"languages": {"es": {"stop": "BAJA"}}}, "inbound.languages.es.stop"),
        ({"languages": {"es": {"stopp": ["BAJA"]}}}, "inbound.languages.es has unknown keys"),
        ({"keywords": {}}, "inbound has unknown keys"),
    ],
)
def test_a_bad_inbound_table_is_refused_naming_the_field(table: object, named: str) -> None:
    with pytest.raises(RoutingConfigError, match=named.replace("+", r"\+")):
        parse_routing({"inbound": table}, env={})

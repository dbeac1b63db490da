from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgument
from server.domain.fields import MAX_REPORTED_PROBLEMS
from server.domain.template_text import (
    FORBIDDEN_SYMBOLS,
    ParsedTemplate,
    parse_template,
    render,
    validate_template_code,
    validate_values,
)


def problems_of(content: str) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_template(content, "template.content")
    assert caught.value.reason == "INVALID_TEMPLATE"
    assert {v.field for v in caught.value.violations} == {"template.content"}
    return [v.description for v in caught.value.violations]


def data_problems(values: dict[str, str], variables: tuple[str, ...]) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_values(values, variables, "data")
    assert caught.value.reason == "INVALID_TEMPLATE_DATA"
    return {v.field: v.description for v in caught.value.violations}


# Tokenizing


@pytest.mark.parametrize(
    ("content", "variables"),
    [
        ("Your code is #code#, valid for #minutes# minutes.", ("code", "minutes")),
        ("Order #order_no# shipped", ("order_no",)),
        ("Call us at #5 street", ()),
        ("Press # to continue", ()),
        ("Rooms #1 and #2 are free", ()),
        ("Price: 5# or #6", ()),
        ("##code##", ("code",)),
        ("#a##b#", ("a", "b")),
        ("#a #b#", ("b",)),
        ("Line one #\n# line two", ()),
        ("Dear #NAME_1#", ("NAME_1",)),
        ("#" + "x" * 23 + "#", ("x" * 23,)),
        ("No variables at all", ()),
    ],
)
def test_variables_are_the_hash_pairs_in_order(content: str, variables: tuple[str, ...]) -> None:
    assert parse_template(content, "content") == ParsedTemplate(content, variables)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("Hello #first name#", '"#first name#"'),
        ("Ref #ab-c#", '"#ab-c#"'),
        ("Hi #prénom#", '"#prénom#"'),
        ("Code #١٢#", '"#١٢#"'),
        ("#" + "x" * 24 + "#", "24 characters"),
    ],
)
def test_a_pair_that_is_not_a_valid_name_is_refused_by_name(content: str, named: str) -> None:
    [problem] = problems_of(content)
    assert named in problem


# Content rules


def test_empty_or_blank_content_is_refused() -> None:
    assert len(problems_of("")) == 1
    assert len(problems_of("  \n ")) == 1


def test_content_is_limited_to_460_characters() -> None:
    assert parse_template("x" * 460, "content").content == "x" * 460
    [problem] = problems_of("x" * 461)
    assert "461 characters" in problem


@pytest.mark.parametrize("symbol", FORBIDDEN_SYMBOLS)
def test_forbidden_symbols_are_refused(symbol: str) -> None:
    [problem] = problems_of(f"Sale {symbol} today")
    assert symbol in problem


def test_a_variable_may_appear_only_once() -> None:
    [problem] = problems_of("#code# is your code; again: #code#")
    assert '"#code#" appears 2 times' in problem


@pytest.mark.parametrize(
    "content",
    [
        "Open https://x.io/#code# now",
        "http://a.b/c?x=#v#",
        "www.x.io/#v#",
        "(WWW.x.io/#v#)",
        "https://#host#/path",
        "https://x.io/#a#-#b#",
    ],
)
def test_a_variable_glued_to_a_link_is_refused(content: str) -> None:
    problems = problems_of(content)
    assert problems
    assert all("attached to a link" in problem for problem in problems)


@pytest.mark.parametrize(
    "content",
    [
        "Open https://x.io/app and enter #code#",
        "Visit www.x.io #code#",
        "Reply awww.#v# to vote",  # "www." inside a word is not a link
        "#code# https://x.io/",
    ],
)
def test_a_variable_apart_from_a_link_is_accepted(content: str) -> None:
    assert parse_template(content, "content").content == content


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of("★ #bad name# #a# #a# https://x.io/#b# " + "x" * 460)
    assert len(problems) == 5


def test_a_flood_of_problems_is_reported_in_part() -> None:
    problems = problems_of(" ".join(f"#bad-{i}#" for i in range(50)))
    assert len(problems) == MAX_REPORTED_PROBLEMS
    assert (
        problems[-1] == f"There are {50 - MAX_REPORTED_PROBLEMS + 1} more problems not listed here."
    )


def test_far_too_long_content_is_only_reported_as_too_long() -> None:
    [problem] = problems_of("★ #a# #a# " * 100_000)
    assert "1000000 characters" in problem


def test_long_caller_text_is_shortened_in_messages() -> None:
    [problem] = problems_of("#" + "x" * 400 + "#")
    assert len(problem) < 150


# Values


def test_values_for_every_variable_are_accepted() -> None:
    validate_values({"code": "123456", "minutes": ""}, ("code", "minutes"), "data")


def test_missing_and_unknown_values_are_named_by_field() -> None:
    problems = data_problems({"code": "1", "extra": "x"}, ("code", "minutes"))
    assert set(problems) == {"data.minutes", "data.extra"}
    assert "required" in problems["data.minutes"]
    assert "no variable" in problems["data.extra"]


def test_values_are_limited_to_32_characters() -> None:
    validate_values({"v": "x" * 32}, ("v",), "data")
    assert "33 characters" in data_problems({"v": "x" * 33}, ("v",))["data.v"]


@pytest.mark.parametrize(
    "value", ["https://evil.io", "see http://x", "www.evil.io", "go WWW.evil.io", "ftp://x"]
)
def test_links_in_values_are_refused(value: str) -> None:
    assert "link" in data_problems({"v": value}, ("v",))["data.v"]


@pytest.mark.parametrize("value", ["A001", "5 minutes", "awww.", "x.io", "a:b", "#code#"])
def test_ordinary_values_are_accepted(value: str) -> None:
    validate_values({"v": value}, ("v",), "data")


def test_all_value_problems_are_reported_at_once() -> None:
    problems = data_problems({"a": "x" * 40, "b": "www.x.io", "z": "1"}, ("a", "b", "c"))
    assert set(problems) == {"data.a", "data.b", "data.c", "data.z"}


# Rendering


def test_render_replaces_each_variable_with_its_value() -> None:
    parsed = parse_template("Hi #name#, your code is #code#. Call #5 street.", "content")
    rendered = render(parsed, {"name": "Ann", "code": "042"})
    assert rendered == "Hi Ann, your code is 042. Call #5 street."


def test_render_does_not_expand_variables_inside_values() -> None:
    parsed = parse_template("#a# and #b#", "content")
    assert render(parsed, {"a": "#b#", "b": "2"}) == "#b# and 2"


names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1
)
# Text a template may hold: no "#", no forbidden symbol, no NUL (PostgreSQL refuses it).
filler = st.text(alphabet=st.characters(exclude_characters="#★【】※→●\x00"), max_size=20)


@given(
    st.lists(names.filter(lambda n: len(n) <= 23), unique=True, min_size=1, max_size=5), st.data()
)
def test_parse_finds_exactly_the_variables_written(
    variables: list[str], data: st.DataObject
) -> None:
    # Words that separate variables end and start with a space, so no link glues.
    gaps = [" " + data.draw(filler) + " " for _ in range(len(variables) + 1)]
    content = gaps[0] + "".join(
        f"#{name}#{gap}" for name, gap in zip(variables, gaps[1:], strict=True)
    )
    parsed = parse_template(content, "content")
    assert parsed.variables == tuple(variables)
    values = {name: str(i) for i, name in enumerate(variables)}
    expected = gaps[0] + "".join(
        f"{values[name]}{gap}" for name, gap in zip(variables, gaps[1:], strict=True)
    )
    assert render(parsed, values) == expected


# Template codes


@pytest.mark.parametrize("code", ["otp", "order-shipped.v2", "A_1", "x" * 64])
def test_readable_template_codes_are_accepted(code: str) -> None:
    assert validate_template_code(code) == code


@pytest.mark.parametrize("code", ["", " otp", "otp ", "order shipped", "x" * 65, "otp/1", "código"])
def test_other_template_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_template_code(code)
    assert caught.value.reason == "INVALID_TEMPLATE_CODE"
    assert [v.field for v in caught.value.violations] == ["template.code"]

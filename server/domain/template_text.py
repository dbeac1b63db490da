"""SMS templates: parsing ``#variable#`` placeholders, checking values, rendering.

The rules are Skynoo's (seed 000) for templates and SendCloud's (seed 001) for
variable values.

How content is split into text and variables
--------------------------------------------
Content is scanned left to right for *pairs*: a ``#``, then an inside that does
not start or end with whitespace and contains no ``#`` and no line break, then a
closing ``#``. Each pair found is a variable, and its inside must be a valid name.
Every other ``#`` is ordinary text. So:

- ``"Your code is #code#"`` has the variable ``code``;
- ``"Call us at #5 street"`` and ``"Press # to continue"`` have no variable;
- ``"Rooms #1 and #2 are free"`` has no variable (the inside would end in a space);
- ``"Hello #first name#"`` has a pair whose inside is not a valid name: refused;
- ``"##code##"`` has the variable ``code`` between two literal ``#``.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.fields import at_most_reported, storable

MAX_CONTENT_CHARS: Final = 460
MAX_VARIABLE_NAME_CHARS: Final = 23
MAX_VALUE_CHARS: Final = 32
MAX_CODE_CHARS: Final = 64
FORBIDDEN_SYMBOLS: Final = ("【", "】", "★", "※", "→", "●")
# Values given for one send at most: no template can have more variables (a
# variable takes at least 3 of the 460 characters).
MAX_VALUES: Final = 160
# Content longer than this is only reported as too long, not read further.
MAX_EXAMINED_CHARS: Final = 4 * MAX_CONTENT_CHARS
# Caller text quoted in a message is cut to this many characters.
_MAX_QUOTED_CHARS: Final = 40

_PAIR = re.compile(r"#([^#\s](?:[^#\r\n]*[^#\s])?)#")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]+")
_CODE = re.compile(r"[A-Za-z0-9_.-]+")
# A link: a scheme separator anywhere, or "www." not preceded by a letter or digit.
_LINK = re.compile(r"://|(?<![0-9a-z])www\.", re.IGNORECASE)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class ParsedTemplate:
    """Template content that passed every rule, with its variables in order of appearance."""

    content: str
    variables: tuple[str, ...]


def parse_template(content: str, field: str) -> ParsedTemplate:
    """Check ``content`` against the template rules and list its variables.

    The rules: not empty or only spaces; at most 460 characters; none of the
    symbols in ``FORBIDDEN_SYMBOLS``; every pair (see the module docstring) a valid
    name of ASCII letters, digits and ``_``, under 24 characters; each variable at
    most once; no variable glued to a link, that is, no variable whose word (the
    text back to the previous whitespace) holds ``://``, or ``www.`` not preceded
    by a letter or digit, before it, as in ``https://x.io/#code#``.

    Raises ``InvalidArgument`` (reason ``INVALID_TEMPLATE``) with one violation on
    ``field`` per problem found, at most ``MAX_REPORTED_PROBLEMS`` of them. Content
    longer than ``MAX_EXAMINED_CHARS`` is reported as too long and nothing else.
    """
    problems: list[str] = []
    if content.strip() == "":
        problems.append("The template content is required and cannot be only spaces.")
    if len(content) > MAX_CONTENT_CHARS:
        problems.append(
            f"The template content is {len(content)} characters long; "
            f"at most {MAX_CONTENT_CHARS} are allowed."
        )
    if len(content) > MAX_EXAMINED_CHARS:
        raise InvalidArgument.field(field, problems[0], reason="INVALID_TEMPLATE")
    if not storable(content):
        problems.append("The template content contains the NUL character (U+0000).")
    for symbol in FORBIDDEN_SYMBOLS:
        if symbol in content:
            problems.append(
                f'The template content contains "{symbol}", a symbol that is not allowed '
                "in templates."
            )

    names: list[str] = []
    pairs = list(_PAIR.finditer(content))
    glued = _glued_to_link(content, [pair.start() for pair in pairs])
    for pair, is_glued in zip(pairs, glued, strict=True):
        name = pair.group(1)
        names.append(name)
        name_problem = _name_problem(name)
        if name_problem is not None:
            problems.append(name_problem)
        if is_glued:
            problems.append(
                f"The variable {_quote('#' + name + '#')} is attached to a link; "
                "a variable cannot be part of a link."
            )
    for name, count in Counter(names).items():
        if count > 1:
            problems.append(
                f"The variable {_quote('#' + name + '#')} appears {count} times; "
                "each variable may appear only once."
            )

    if problems:
        violations = [FieldViolation(field, problem) for problem in problems]
        raise InvalidArgument(at_most_reported(violations, field), reason="INVALID_TEMPLATE")
    return ParsedTemplate(content=content, variables=tuple(dict.fromkeys(names)))


def _glued_to_link(content: str, starts: list[int]) -> list[bool]:
    """For each pair start (ascending), whether the text before it in its word holds a link.

    A word is a run of non-whitespace; a link is ``://``, or ``www.`` not preceded
    by a letter or digit. Runs in time linear in ``content``.
    """
    glued: list[bool] = []
    words = _WORD.finditer(content)
    word_end = -1
    link_end: int | None = None
    for start in starts:
        while word_end <= start:
            word = next(words)  # a pair starts with "#", so some word holds it
            word_end = word.end()
            link = _LINK.search(content, word.start(), word_end)
            link_end = None if link is None else link.end()
        glued.append(link_end is not None and link_end <= start)
    return glued


def _name_problem(name: str) -> str | None:
    if _NAME_CHARS.fullmatch(name) is None:
        return (
            f"{_quote('#' + name + '#')} is not a valid variable: a variable name "
            "may contain only letters, digits and underscores."
        )
    if len(name) > MAX_VARIABLE_NAME_CHARS:
        return (
            f"The variable name {_quote(name)} is {len(name)} characters long; "
            f"it must be under {MAX_VARIABLE_NAME_CHARS + 1} characters."
        )
    return None


def _quote(text: str) -> str:
    """Quote caller text for a message, cut short if long."""
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[: _MAX_QUOTED_CHARS - 1] + "…"
    return f'"{text}"'


def validate_values(values: Mapping[str, str], variables: Sequence[str], field: str) -> None:
    """Check the values given for a template's ``variables``.

    Every variable needs a value (an empty string is a value); no other key is
    allowed; a value has at most 32 characters, no NUL and no link (``scheme://``
    anywhere, or ``www.`` not preceded by a letter or digit); at most ``MAX_VALUES``
    values. Raises ``InvalidArgument`` (reason ``INVALID_TEMPLATE_DATA``) with one
    violation per problem, on ``field.<name>`` (on ``field`` for a key that cannot
    be a variable name, so that no absurd key is echoed).
    """
    if len(values) > MAX_VALUES:
        raise InvalidArgument.field(
            field,
            f"{len(values)} values were given; at most {MAX_VALUES} are allowed.",
            reason="INVALID_TEMPLATE_DATA",
        )
    violations: list[FieldViolation] = []
    for name in variables:
        if name not in values:
            violations.append(
                FieldViolation(
                    f"{field}.{name}",
                    f"A value for the template variable {_quote(name)} is required.",
                )
            )
    known = set(variables)
    for key, value in values.items():
        if key not in known:
            where = field if _name_problem(key) else f"{field}.{key}"
            violations.append(
                FieldViolation(where, f"The template has no variable named {_quote(key)}.")
            )
            continue
        where = f"{field}.{key}"
        if len(value) > MAX_VALUE_CHARS:
            violations.append(
                FieldViolation(
                    where,
                    f"The value is {len(value)} characters long; "
                    f"at most {MAX_VALUE_CHARS} are allowed.",
                )
            )
        if _LINK.search(value) is not None:
            violations.append(
                FieldViolation(where, "The value contains a link; links are not allowed in values.")
            )
        if not storable(value):
            violations.append(
                FieldViolation(where, "The value contains the NUL character (U+0000).")
            )
    if violations:
        raise InvalidArgument(at_most_reported(violations, field), reason="INVALID_TEMPLATE_DATA")


def render(parsed: ParsedTemplate, values: Mapping[str, str]) -> str:
    """Return the template content with each ``#name#`` replaced by its value.

    ``values`` must already have passed ``validate_values``. Values are inserted
    as they are: a ``#`` inside a value is never read as a variable.
    """
    layout, names = _layout(parsed.content, parsed.variables)
    if not names:
        return parsed.content
    return layout.format(*[values[name] for name in names])


@functools.lru_cache(maxsize=256)
def _layout(content: str, variables: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """``content`` as a ``str.format`` layout with a field for each variable, and the
    variables in field order.

    Pairs of ``#`` around a word that is not a variable stay in the text, exactly as
    a left-to-right scan finds them. Rendering a batch fills this layout instead of
    scanning the content once per number."""
    known = set(variables)
    layout: list[str] = []
    names: list[str] = []
    start = 0
    for pair in _PAIR.finditer(content):
        layout.append(_literal(content[start : pair.start()]))
        start = pair.end()
        if pair.group(1) in known:
            layout.append("{}")
            names.append(pair.group(1))
        else:
            layout.append(_literal(pair.group()))
    layout.append(_literal(content[start:]))
    return "".join(layout), tuple(names)


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def validate_template_code(code: str, field: str = "template.code") -> str:
    """Return ``code`` if it is a valid template code, else raise ``InvalidArgument``.

    A code is 1 to 64 letters, digits, ``_``, ``-`` or ``.``; surrounding spaces
    are refused, not stripped. Reason ``INVALID_TEMPLATE_CODE``.
    """
    if code == "":
        description = "A template code is required."
    elif len(code) > MAX_CODE_CHARS:
        description = (
            f"The template code is {len(code)} characters long; "
            f"at most {MAX_CODE_CHARS} are allowed."
        )
    elif _CODE.fullmatch(code) is None:
        description = (
            "The template code may contain only letters, digits, underscores, "
            "hyphens and dots, with no spaces."
        )
    else:
        return code
    raise InvalidArgument.field(field, description, reason="INVALID_TEMPLATE_CODE")

"""The emulators are written from the providers' documents alone (issue 15): an
emulator that borrowed the transport's paths, codes, signing or parsing would agree
with any misreading of the document, and the tests could not find it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EMULATORS = Path(__file__).resolve().parents[2] / "server" / "emulators"
# Every emulator module: each is written from its provider's document alone.
INDEPENDENT = [
    "__init__.py",
    "common.py",
    "skynoo.py",
    "sendsms.py",
    "sendcloud.py",
    "sendcloud_state.py",
    "twilio.py",
    "plivo.py",
]


def server_imports(path: Path) -> list[str]:
    """Every name of ``server`` that ``path`` imports (``module.name`` for a from
    import), at any depth of the file (functions included), relative ones resolved."""
    package = ["server", "emulators"]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [f"{module}.{alias.name}" for alias in node.names]
    return [name for name in found if name == "server" or name.startswith("server.")]


@pytest.mark.parametrize("name", INDEPENDENT)
def test_an_emulator_imports_nothing_of_the_gateway(name: str) -> None:
    imported = server_imports(EMULATORS / name)
    outside = [m for m in imported if not m.startswith("server.emulators")]
    assert outside == [], f"{name} imports {outside}: write it from the seed instead"
    # What it takes from its own package must be held to the same rule.
    inside = {m.removeprefix("server.emulators.").split(".")[0] + ".py" for m in imported}
    assert inside <= set(INDEPENDENT), f"{name} imports unchecked emulator modules {inside}"


def test_the_scan_sees_imports_in_every_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import server.providers.skynoo_codes\n"
        "from server.domain.models import MessageStatus\n"
        "from server import providers\n"
        "from ..providers import http\n"
        "from . import common\n"
        "def f():\n"
        "    from server.providers.sendcloud_codes import sign\n"
    )
    assert server_imports(sample) == [
        "server.providers.skynoo_codes",
        "server.domain.models.MessageStatus",
        "server.providers",
        "server.providers.http",
        "server.emulators.common",
        "server.providers.sendcloud_codes.sign",
    ]

"""The README and docs/ as a newcomer follows them: the two commands are the ones the
project runs (CI runs the README's test command), and every link between the pages
leads to a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    prose = FENCE.sub("", page.read_text())
    return {_slug(line.lstrip("#")) for line in prose.splitlines() if line.startswith("#")}


def test_the_two_commands_are_the_ones_the_project_runs() -> None:
    commands = _section((ROOT / "README.md").read_text(), "The two commands")
    blocks = re.findall(r"```bash\n(.*?)\n```", commands, re.S)
    assert blocks == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/smsgw serve",
        "bash scripts/test.sh",
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^env -u DATABASE_URL bash scripts/test\.sh\b", ci, re.M), (
        "CI must run the README's test command"
    )
    assert (ROOT / "scripts" / "test.sh").exists()


def test_the_tour_keeps_the_account_secret_out_of_the_repository() -> None:
    tour = _section((ROOT / "README.md").read_text(), "A five-minute tour")
    created = [line for line in tour.splitlines() if "account create" in line]
    assert created and all("> ~/" in line for line in created)
    assert "tee account.json" not in tour


def test_every_link_between_the_pages_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []

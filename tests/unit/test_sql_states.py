"""Statements name their states (server/store/states.py), and the partial indexes
the migrations built still cover the statements that rely on them: the planner uses
a partial index only when the statement's predicate implies the index's."""

from __future__ import annotations

from pathlib import Path

from server.domain.models import MessageStatus, Priority, VerificationState
from server.store import outbox
from server.store.states import WAITING, literals

MIGRATIONS = Path(outbox.__file__).parent / "migrations"


def migration(prefix: str) -> str:
    [path] = MIGRATIONS.glob(f"{prefix}_*.sql")
    return path.read_text()


def test_literals_are_the_enum_numbers() -> None:
    assert WAITING == "1, 2"
    assert literals(VerificationState.EXPIRED, VerificationState.EXHAUSTED) == "3, 4"


def test_the_claim_has_the_predicates_of_the_due_indexes() -> None:
    due = f"status IN ({WAITING})"
    due_batch = f"status IN ({WAITING}) AND priority = {Priority.BATCH:d}"
    assert f"WHERE {due};" in migration("0001")  # messages_due
    assert f"WHERE {due_batch};" in migration("0006")  # messages_due_bulk
    assert f"WHERE {due} AND priority < {Priority.BATCH:d}" in outbox._CLAIM
    assert f"WHERE {due_batch} AND not_before <= now()" in outbox._CLAIM


def test_the_receipt_poll_has_the_predicate_of_the_sent_rows_index() -> None:
    sent = f"status = {MessageStatus.SENT:d}"
    assert f"WHERE {sent};" in migration("0002")  # messages_sent_by_provider
    assert f"WHERE {sent} AND provider = $1" in outbox._DUE_FOR_POLL

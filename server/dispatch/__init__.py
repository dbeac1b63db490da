"""Outbox dispatch: workers, routing, retry policy."""

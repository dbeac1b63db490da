-- Batch messages are claimed account by account (a fair share each), so one
-- account's campaign cannot hold back another's: due batch rows by account.
CREATE INDEX messages_due_bulk ON messages (account_id, not_before)
    WHERE status IN (1, 2) AND priority = 2;

-- Batch tasks (Skynoo batch/create, status, detail). Counts are kept exact by the
-- same statement that records each status change of a batch message.

CREATE TABLE batches (
    id          text        PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id),
    -- 1 pending, 2 executing, 3 succeeded, 4 failed, 5 cancelled (sms.v1 BatchStatus)
    status      smallint    NOT NULL,
    use_type    smallint    NOT NULL,
    total       integer     NOT NULL,
    sent        integer     NOT NULL DEFAULT 0,  -- reached a provider (SENT or after)
    delivered   integer     NOT NULL DEFAULT 0,
    failed      integer     NOT NULL DEFAULT 0,  -- FAILED, UNDELIVERED or REJECTED
    cancelled   integer     NOT NULL DEFAULT 0,
    finished    integer     NOT NULL DEFAULT 0,  -- messages in a final status
    rejected    jsonb       NOT NULL DEFAULT '[]',  -- [[number, reason], ...] at creation
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_account ON batches (account_id, created_at);

-- A batch's messages in id order (paging), and its not-yet-sent ones (cancel).
CREATE INDEX messages_batch ON messages (batch_id, id) WHERE batch_id IS NOT NULL;

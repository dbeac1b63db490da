-- The log of an account's events other than message status changes: batch status
-- changes (event_type 2) and verification outcomes (event_type 3), numbered as
-- sms.v1.EventType numbers them. Each row is written in the transaction of the
-- change it records (store/account_events.py), under its own advisory lock so ids
-- follow commit order, like message_events. Ids come from message_event_ids, so an
-- event id names one event of either log. status is the BatchStatus or the
-- VerificationState reached; the counts are the batch's when it changed.
CREATE TABLE account_events (
    event_id     bigint      PRIMARY KEY,
    account_id   bigint      NOT NULL,
    event_type   smallint    NOT NULL,
    subject_id   text        NOT NULL,
    status       smallint    NOT NULL,
    total        integer     NOT NULL DEFAULT 0,
    sent         integer     NOT NULL DEFAULT 0,
    delivered    integer     NOT NULL DEFAULT 0,
    failed       integer     NOT NULL DEFAULT 0,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_events_account ON account_events (account_id, event_id);

-- The last account_events.event_id turned into deliveries for each endpoint (the
-- message log keeps its own cursor, event_cursor).
ALTER TABLE webhooks ADD COLUMN account_event_cursor bigint NOT NULL DEFAULT 0;

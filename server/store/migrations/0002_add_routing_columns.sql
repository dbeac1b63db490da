-- What template-only providers need (our template code and the variable values,
-- in the template's variable order), when a message was last polled for status,
-- and receipts that arrived before the send they report on was recorded.

ALTER TABLE messages
    ADD COLUMN template_code text,
    ADD COLUMN template_data jsonb,
    ADD COLUMN polled_at timestamptz;

-- SENT messages per provider, oldest poll first (the receipt poller's scan).
CREATE INDEX messages_sent_by_provider ON messages (provider, polled_at NULLS FIRST)
    WHERE status = 3;

CREATE TABLE early_receipts (
    provider             text        NOT NULL,
    provider_message_id  text        NOT NULL,
    status               smallint    NOT NULL,
    error_code           text        NOT NULL DEFAULT '',
    received_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, provider_message_id)
);

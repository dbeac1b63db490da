-- Messages from recipients (InboundService). event_id is the message's event in the
-- account_events log (event_type 4, subject_id = id), drawn under that log's lock in
-- the transaction that stores the message, so WatchInboundMessages resumes from it
-- like a status stream. keyword is STOP, START, HELP or ''. reply_to_message_id is
-- our message the provider says this one answers ('' when it does not say).
CREATE TABLE inbound_messages (
    id                   text        PRIMARY KEY,
    event_id             bigint      NOT NULL UNIQUE,
    account_id           bigint      NOT NULL,
    from_number          text        NOT NULL,
    to_number            text        NOT NULL,
    body                 text        NOT NULL,
    provider             text        NOT NULL,
    provider_message_id  text        NOT NULL DEFAULT '',
    keyword              text        NOT NULL DEFAULT '',
    reply_to_message_id  text        NOT NULL DEFAULT '',
    received_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_messages_account ON inbound_messages (account_id, event_id);
-- A provider that posts the same inbound message twice (a retried webhook) stores it once.
CREATE UNIQUE INDEX inbound_messages_provider_ref ON inbound_messages (provider, provider_message_id)
    WHERE provider_message_id <> '';
-- Which account an inbound message belongs to when the routing file names no owner
-- of the number it was sent to: the account that last sent to its sender.
CREATE INDEX messages_to_number ON messages (to_number, created_at);

-- Accounts, credentials, templates, the message outbox, status events and
-- idempotency keys. Status and use-type columns hold the sms.v1 enum numbers.

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    verified    boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credentials (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint      NOT NULL REFERENCES accounts (id),
    api_key      text        NOT NULL UNIQUE,
    secret_hash  text        NOT NULL,
    allow_cidrs  cidr[]      NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX credentials_account ON credentials (account_id);

CREATE TABLE templates (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id),
    code        text        NOT NULL,
    content     text        NOT NULL,
    use_type    smallint    NOT NULL,
    variables   text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX templates_account_code ON templates (account_id, code)
    WHERE deleted_at IS NULL;
CREATE INDEX templates_account_id ON templates (account_id, id) WHERE deleted_at IS NULL;

-- The outbox: a message is a row here from acceptance to its final status.
-- priority: 0 verification codes, 1 single sends, 2 batches (lower goes first).
CREATE TABLE messages (
    id                   text        PRIMARY KEY,
    account_id           bigint      NOT NULL,
    batch_id             text,
    to_number            text        NOT NULL,
    use_type             smallint    NOT NULL,
    body                 text        NOT NULL,
    template_id          bigint,
    segments             integer     NOT NULL,
    priority             smallint    NOT NULL,
    status               smallint    NOT NULL,
    error_code           text        NOT NULL DEFAULT '',
    provider             text        NOT NULL DEFAULT '',
    provider_message_id  text,
    attempts             integer     NOT NULL DEFAULT 0,
    not_before           timestamptz NOT NULL,
    claimed_until        timestamptz,
    sent_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- Due work: PENDING (1) and QUEUED (2) rows, by priority then due time.
CREATE INDEX messages_due ON messages (priority, not_before) WHERE status IN (1, 2);
CREATE INDEX messages_provider_ref ON messages (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- One row per status change. event_id comes from message_event_ids while the
-- writer holds the events advisory lock, so ids are assigned in commit order and
-- a reader that has seen id N has seen every committed id below N.
CREATE SEQUENCE message_event_ids;
CREATE TABLE message_events (
    event_id     bigint      PRIMARY KEY,
    message_id   text        NOT NULL,
    account_id   bigint      NOT NULL,
    batch_id     text,
    to_number    text        NOT NULL,
    status       smallint    NOT NULL,
    error_code   text        NOT NULL DEFAULT '',
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_events_message ON message_events (message_id, event_id);
CREATE INDEX message_events_account ON message_events (account_id, event_id);

-- request_id idempotency: one row per (account, operation, key), reusable after
-- the window (one hour) has passed.
CREATE TABLE idempotency_keys (
    account_id    bigint      NOT NULL,
    operation     text        NOT NULL,
    request_id    text        NOT NULL,
    request_hash  bytea       NOT NULL,
    resource_id   text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, operation, request_id)
);

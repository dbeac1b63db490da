-- Webhook endpoints of each account. The signing secret is held sealed with the
-- server key. event_cursor is the last message_events.event_id turned into
-- deliveries for this endpoint (event ids follow commit order, see store/events.py).
CREATE TABLE webhooks (
    id             bigserial   PRIMARY KEY,
    account_id     bigint      NOT NULL,
    url            text        NOT NULL,
    event_types    smallint[]  NOT NULL,
    description    text        NOT NULL DEFAULT '',
    secret_sealed  bytea       NOT NULL,
    disabled       boolean     NOT NULL DEFAULT false,
    event_cursor   bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_account ON webhooks (account_id, id);

-- One row per (endpoint, event). state: 1 PENDING, 2 SUCCEEDED, 3 FAILED
-- (server/store/webhooks.py names them).
-- order_key (the message id) keeps the events of one message in order.
CREATE TABLE webhook_deliveries (
    id                bigserial   PRIMARY KEY,
    webhook_id        bigint      NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id          bigint      NOT NULL,
    event_type        smallint    NOT NULL,
    order_key         text        NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    last_http_status  integer     NOT NULL DEFAULT 0,
    state             smallint    NOT NULL DEFAULT 1,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_until       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 1;
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, event_id)
    WHERE state = 1;

-- Per-account rate overrides (calls a second; NULL: the server's default).
ALTER TABLE accounts
    ADD COLUMN send_per_second real,
    ADD COLUMN query_per_second real;

-- The last message sent to each mobile, per account and use type: at most one per
-- configured interval (SMSGW_MOBILE_INTERVAL_*), on every replica.
CREATE TABLE mobile_send_last (
    account_id    bigint      NOT NULL,
    mobile        text        NOT NULL,
    use_type      smallint    NOT NULL,
    last_sent_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, mobile, use_type)
);

-- OTP verifications (Skynoo verification/send and check). Only a keyed hash of
-- each code is kept; the outbox message that carries the code holds it sealed
-- (encrypted) until a provider has taken it, then the sealed copy is erased.

CREATE TABLE verifications (
    id             text        PRIMARY KEY,
    account_id     bigint      NOT NULL REFERENCES accounts (id),
    mobile         text        NOT NULL,
    scene          text        NOT NULL DEFAULT '',
    channel        smallint    NOT NULL,
    code_hash      bytea       NOT NULL,
    -- 1 pending, 2 verified, 3 expired, 4 exhausted (sms.v1 VerificationState)
    state          smallint    NOT NULL,
    attempts_left  integer     NOT NULL,
    expires_at     timestamptz NOT NULL,
    message_id     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verifications_pending_expiry ON verifications (expires_at) WHERE state = 1;

-- The last code sent to each mobile, per account: at most one per interval.
CREATE TABLE otp_mobile_last (
    account_id    bigint      NOT NULL,
    mobile        text        NOT NULL,
    last_sent_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, mobile)
);

-- Per-account OTP settings (NULL: the server's defaults).
ALTER TABLE accounts
    ADD COLUMN otp_max_attempts integer,
    ADD COLUMN otp_allowed_regions text[];

-- A generated server key when SMSGW_SECRET_KEY is not set (development only).
CREATE TABLE server_secrets (
    name        text        PRIMARY KEY,
    value       bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE messages
    ADD COLUMN channel smallint NOT NULL DEFAULT 1,
    ADD COLUMN sealed_code bytea;

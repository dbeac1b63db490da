-- The operators' API and the account guardrails (AccountService).
-- admin: the credential may call AccountService (`smsgw credential create ID --admin`).
ALTER TABLE credentials ADD COLUMN admin boolean NOT NULL DEFAULT false;

-- allowed_countries: ISO regions any message may go to (NULL: every country).
-- daily_message_cap / per_mobile_daily_cap: messages accepted per UTC day, for the
-- account / to one mobile (NULL: no cap), counted in daily_sends.
ALTER TABLE accounts
    ADD COLUMN allowed_countries     text[],
    ADD COLUMN daily_message_cap     integer,
    ADD COLUMN per_mobile_daily_cap  integer;

-- Messages accepted per account and UTC day: mobile '' is the account's total, a
-- number its own count. Rows of past days are purged by maintenance.
CREATE TABLE daily_sends (
    account_id  bigint  NOT NULL,
    day         date    NOT NULL,
    mobile      text    NOT NULL,
    sent        integer NOT NULL,
    PRIMARY KEY (account_id, day, mobile)
);

-- Prepaid balance in the smallest currency unit (NULL: unlimited). A message of a
-- prepaid account is charged when it is accepted (charged: what it cost, per segment
-- at its country's price); the charge is given back if it ends CANCELLED, FAILED or
-- REJECTED before a provider took it (store/outbox.py).
ALTER TABLE accounts ADD COLUMN balance bigint;
ALTER TABLE messages ADD COLUMN charged bigint NOT NULL DEFAULT 0;

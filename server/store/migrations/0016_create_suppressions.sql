-- Numbers an account must not send to (SuppressionService). mobile is E.164; reason
-- holds the sms.v1.SuppressionReason number; use_types the sms.v1.UseType numbers it
-- applies to, never empty (an empty request is stored as notification and marketing),
-- so every check is "use_type = ANY(use_types)". The primary key serves the single
-- look-ups, the batch join (CreateBatch) and the claim's check alike.
CREATE TABLE suppressions (
    account_id  bigint      NOT NULL,
    mobile      text        NOT NULL,
    reason      smallint    NOT NULL,
    use_types   smallint[]  NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, mobile)
);

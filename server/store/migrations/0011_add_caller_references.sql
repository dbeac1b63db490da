-- Caller references and per-message options (issue 18): the caller's own id and
-- key-value pairs, echoed in status answers and events; the moment after which a
-- message not yet handed to a provider ends FAILED / EXPIRED (NULL: the server's
-- message TTL). A batch keeps its own so every message it creates carries them.
ALTER TABLE messages
    ADD COLUMN reference text NOT NULL DEFAULT '',
    ADD COLUMN metadata jsonb,
    ADD COLUMN expires_at timestamptz;
ALTER TABLE batches
    ADD COLUMN reference text NOT NULL DEFAULT '',
    ADD COLUMN metadata jsonb,
    ADD COLUMN validity_seconds integer,
    ADD COLUMN smart_encoding boolean NOT NULL DEFAULT false;

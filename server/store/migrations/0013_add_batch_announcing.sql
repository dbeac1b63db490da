-- A batch's messages are committed unannounced (claimed_until = 'infinity': no worker
-- takes them, no event names them yet), then announced a few hundred at a time:
-- each chunk's PENDING events written under the event-log lock, its messages made
-- claimable. ``announcing`` marks a batch with messages still unannounced, so that
-- any replica finishes the announcement of a batch whose server died meanwhile.
ALTER TABLE batches ADD COLUMN announcing boolean NOT NULL DEFAULT false;
CREATE INDEX batches_announcing ON batches (created_at) WHERE announcing;

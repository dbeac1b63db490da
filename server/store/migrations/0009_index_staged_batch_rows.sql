-- A batch's messages are stored in one transaction as staged (status 0: neither
-- claimable nor counted), then published a slice at a time with their first events
-- (store/batches.py). Staged rows left by a crash are found through this index,
-- empty but for batches being published.
CREATE INDEX messages_staged ON messages (batch_id) WHERE status = 0;

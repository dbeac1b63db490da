-- Each delivery round takes, per endpoint with free slots, its earliest due pending
-- deliveries (store/webhooks.py claim_due): an index walk per endpoint, not a scan
-- of every pending delivery when one endpoint has a large backlog.
CREATE INDEX webhook_deliveries_due_per_webhook
    ON webhook_deliveries (webhook_id, next_attempt_at, id) WHERE state = 1;

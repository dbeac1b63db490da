"""Status fan-out: LISTEN/NOTIFY hub and stream subscriptions."""

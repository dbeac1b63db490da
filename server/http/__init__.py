"""HTTP side: health, metrics, provider webhooks."""

"""Webhook delivery: events pushed to callers' HTTPS endpoints."""

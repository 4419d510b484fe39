"""Calls to Stripe's API."""

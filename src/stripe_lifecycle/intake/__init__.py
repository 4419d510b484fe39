"""The webhook intake path: normalise Stripe events, store them in the inbox, forward
them to Temporal."""

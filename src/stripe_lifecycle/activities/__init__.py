"""Every side effect of the workflows; each activity is idempotent."""

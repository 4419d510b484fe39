"""Pure domain logic: no I/O, no clock, no randomness.

The worker passes it through the workflow sandbox with the rest of our package."""

"""Pure domain logic: no I/O, no clock, no randomness.

Workflows pass the whole package through the sandbox as one prefix."""

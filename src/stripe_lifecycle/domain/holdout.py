"""Holdout groups: which customers an automation holds out of its mail (pure).

Assignment is a hash of (automation, customer), so it is the same on every worker, in
every run and after every restart: a customer keeps their group for the life of the
automation, whatever instance of it they are in. The hash is SHA-256, whose output is
uniform enough that the share held out is the configured one within binomial noise.
"""

import hashlib

BASIS_POINTS = 10_000


def held_out(customer_id: str, automation: str, basis_points: int) -> bool:
    """Whether the customer is in the automation's holdout group (`basis_points` of
    10,000 customers are)."""
    if basis_points <= 0:
        return False
    digest = hashlib.sha256(f"{automation}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BASIS_POINTS < basis_points

"""Heartbeats that say only "this worker is still on it".

An activity that waits on a remote call (Postmark, an SMTP server, Stripe) sends no
progress, yet Temporal can only tell a dead worker from a slow answer by heartbeats: without
them a killed worker's attempt stays "started" until its whole start-to-close timeout runs
out. With them, Temporal gives up on the attempt once its heartbeat timeout passes in
silence and schedules the retry, which the send key or the idempotency key keeps from
acting twice.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

# Beats per heartbeat timeout: one late beat (a busy event loop) does not time the attempt out.
BEATS_PER_TIMEOUT = 4


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeats for the running activity until the block ends, a few times per its
    heartbeat timeout (the SDK throttles what it sends on to the server). An activity run
    without a heartbeat timeout has nobody listening: nothing is sent."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    interval = timeout.total_seconds() / BEATS_PER_TIMEOUT

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    beats = asyncio.create_task(beat())
    try:
        yield
    finally:
        # Not awaited: the beat ends at its next sleep, and waiting for it here could
        # swallow a cancellation of the activity itself.
        beats.cancel()

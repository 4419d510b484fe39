"""A stand-in customer workflow for the usage API's tests: it records the
`segments_changed` signals it receives, as the real customer workflow's handler would
receive them, and answers them to a query."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stripe_lifecycle.activities.interface import SegmentsChanged
    from stripe_lifecycle.domain import contract


@workflow.defn
class SegmentsSignalRecorder:
    def __init__(self) -> None:
        self.received: list[SegmentsChanged] = []

    @workflow.run
    async def run(self) -> None:
        # Runs until the test terminates it.
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=contract.SEGMENTS_CHANGED_SIGNAL)
    def segments_changed(self, change: SegmentsChanged) -> None:
        self.received.append(change)

    @workflow.query
    def signals(self) -> list[SegmentsChanged]:
        return self.received

"""Faust's table recovery with the input partitions seeked before any of their records flow.

faust-streaming (0.15) ends a recovery in ``Recovery.on_recovery_completed`` by resuming the
input partitions and only then seeking them to the committed offsets, while the flow is still
running for the changelog reading. Records fetched in that window reach the agent and are
processed before the records the seek makes the fetcher read again, so a device's older report
arrives after a newer one and is rejected as a replay. Records the fetcher is still handing
over when the seek lands are booked as an offset gap (counted as acked, so the next commit
skips offsets that nobody processed), and the re-read earlier offsets are then discarded as
"already read" (``DROPPED MESSAGE`` in Faust's dev log). Seen in the rebalance fault test as one
missing report for a few devices; a gap at the head of a partition's acks instead blocks its
commits for good (Faust issue #596).

Stopping the flow first gives the order Faust itself uses when no table needs recovery:
flow stopped, partitions resumed, seek to the committed offsets, flow resumed (the parent
method resumes the flow after its seek). The fetcher leaves its current batch as soon as the
flow stops, so nothing fetched from the old positions is delivered after the seek.
"""

from __future__ import annotations

from faust.tables import TableManager
from faust.tables.recovery import Recovery


class SeekFirstRecovery(Recovery):
    """Recovery whose completion seeks the input partitions with the flow stopped."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        self.app.flow_control.suspend()
        await super().on_recovery_completed(generation_id)


class SeekFirstTableManager(TableManager):
    """Faust's table manager with :class:`SeekFirstRecovery` (``faust.App(TableManager=...)``)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

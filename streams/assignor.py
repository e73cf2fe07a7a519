"""Faust's partition assignor, surviving a static member that comes back on another web address.

The worker joins its consumer group as a static member (``consumer_group_instance_id``). When a
worker restarts within the session timeout, Kafka hands the returning member the assignment the
leader computed for its previous incarnation, without a rebalance. Faust stores the member's web
URL in that assignment and ends ``PartitionAssignor.on_assignment`` with
``assert metadata.url == str(self._url)``: a worker that came back with another ``web_port`` or
``web_host`` (same ``instance_id``) fails the assertion inside aiokafka's coordinator task, which
then stops for good. The process stays alive, owns no partition and never becomes ready.

The URL in an assignment only serves Faust's routing of table-key web requests between workers,
which this worker does not use. The returning member therefore takes its assignment with its own
URL; the leader learns the new address at the next rebalance.

Written against faust-streaming 0.15 (``ClientMetadata``, ``_compress``/``_decompress``);
``tests/unit/test_stream_assignor.py`` fails if those change.
"""

from __future__ import annotations

import logging
from typing import cast

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientMetadata

log = logging.getLogger(__name__)


class RestartTolerantAssignor(PartitionAssignor):
    """Faust's assignor that accepts its own cached assignment after a restart on a new address."""

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        metadata = cast(ClientMetadata, ClientMetadata.loads(self._decompress(assignment.user_data)))
        own_url = str(self._url)
        if metadata.url != own_url:
            log.warning(
                "assignment carries this worker's previous web address; taking it as this worker's",
                extra={"fields": {"assigned_url": metadata.url, "own_url": own_url}},
            )
            metadata.url = own_url
            assignment = ConsumerProtocolMemberAssignment(
                assignment.version, assignment.assignment, self._compress(metadata.dumps())
            )
        super().on_assignment(assignment)

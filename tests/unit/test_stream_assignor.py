"""A static member that restarts on another web address takes its cached assignment.

The cached assignment is what Kafka hands back to a static member returning within the session
timeout without a rebalance (whether it does depends on the group's timing; the re-enrolment test
in tests/integration/test_stream_auth.py restarts instance ``w1`` on a new port and once hung here).
The assignment is built as the leader builds it, on an app that never connects.
"""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from fleetpulse.models.registry import ScorerSet
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import create_app
from fleetpulse.streams.faust_internals import RestartTolerantAssignor
from fleetpulse.streams.sinks import NullSink

PREVIOUS_URL = "http://127.0.0.1:1111"


def worker_app(tmp_path: Path) -> faust.App:
    settings = ServerSettings.model_validate(
        {"streams": {"store": "memory", "data_dir": str(tmp_path), "web_port": 2222}}
    )
    return create_app(settings, scorers=ScorerSet([]), sink=NullSink())


def cached_assignment(url: str) -> ConsumerProtocolMemberAssignment:
    """What the leader computed for the member's previous incarnation (Faust's own encoding)."""
    metadata = ClientMetadata(assignment=ClientAssignment(actives={}, standbys={}), url=url, changelog_distribution={})
    return ConsumerProtocolMemberAssignment(
        PartitionAssignor.version, [], PartitionAssignor._compress(metadata.dumps())
    )


def test_the_worker_uses_the_restart_tolerant_assignor(tmp_path: Path) -> None:
    assert isinstance(worker_app(tmp_path).assignor, RestartTolerantAssignor)


def test_a_cached_assignment_with_the_previous_address_is_taken(tmp_path: Path) -> None:
    assignor = worker_app(tmp_path).assignor
    assignor.on_assignment(cached_assignment(PREVIOUS_URL))
    assert assignor.assigned_actives() == set()


def test_faust_itself_still_refuses_it(tmp_path: Path) -> None:
    """Pins the internals assignor.py works around: when this fails, Faust changed
    ``on_assignment`` (or its encoding) and RestartTolerantAssignor must be re-checked."""
    app = worker_app(tmp_path)
    plain = PartitionAssignor(app, replicas=0)
    with pytest.raises(AssertionError):
        plain.on_assignment(cached_assignment(PREVIOUS_URL))
    plain.on_assignment(cached_assignment(str(app.conf.canonical_url)))

"""The worker's recovery stops the flow before Faust resumes and seeks the input partitions.

The race itself needs a real broker (tests/integration/test_stream_worker.py: kill -9 restart
and rebalance); here only the order is checked, on an app that never connects.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.tables.recovery import Recovery

from fleetpulse.models.registry import ScorerSet
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import create_app
from fleetpulse.streams.recovery import SeekFirstRecovery
from fleetpulse.streams.sinks import NullSink


def test_recovery_completion_runs_with_the_flow_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": str(tmp_path)}})
    app = create_app(settings, scorers=ScorerSet([]), sink=NullSink())
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    assert isinstance(recovery, SeekFirstRecovery)

    seen: dict[str, bool] = {}

    async def faust_completion(self: Recovery, generation_id: int = 0) -> None:
        # stands for Faust's own method: resume the input partitions, seek them, resume the flow
        seen["consumer_flow"] = self.app.consumer.flow_active
        seen["stream_flow"] = self.app.flow_control.is_active()

    monkeypatch.setattr(Recovery, "on_recovery_completed", faust_completion)
    consumer: Any = app.consumer
    consumer.resume_flow()
    app.flow_control.resume()

    asyncio.run(recovery.on_recovery_completed(generation_id=1))

    assert seen == {"consumer_flow": False, "stream_flow": False}

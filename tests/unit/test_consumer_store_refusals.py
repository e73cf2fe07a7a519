"""The ticket consumer dead-letters a record the store refuses (tests/integration/test_store_limits_postgres.py
performs that attack on PostgreSQL, where the refusals happen), but a store it cannot reach is no reason to
dead-letter anything: the error propagates, nothing is committed, and the restarted consumer re-reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC
from fleetpulse.contract.codec import encode
from fleetpulse.contract.topics import Topics
from tests.alerts_support import make_alert, make_inventory
from tests.unit.test_contract_poison import consumer_over


def test_an_unreachable_store_is_retried_not_dead_lettered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topics = Topics()
    values = [
        (topics.inventory, encode(make_inventory("pc-1", updated_at=datetime.now(UTC) - timedelta(hours=1)))),
        (topics.alerts, encode(make_alert("pc-1"))),
    ]
    gone = TicketStore(create_engine(f"sqlite:///{tmp_path}/no-such-folder/tickets.db"))
    consumer, kafka_consumer, producer = consumer_over(values, gone, monkeypatch, key=b"pc-1")
    try:
        with pytest.raises(OperationalError):
            consumer.poll_once()
    finally:
        consumer.close()
    assert kafka_consumer.commits == 0
    assert producer.sent == []

"""Attacks that only PostgreSQL shows, on the harness's real PostgreSQL (a scratch schema per test):

- concurrent moves of one ticket (PostgreSQL reads without waiting unless the row is locked);
- a contract-valid alert whose ``storm_group`` (up to 128 characters) did not fit ``storm_groups.group_id``
  (VARCHAR(64)): the DataError was no ValueError, so the ticket consumer crash-looped on the record;
- values PostgreSQL refuses where SQLite stores anything (a NUL character): the consumer dead-letters the
  record with the reason and applies the rest of its poll;
- an ID token whose ``sub`` does not fit ``web_sessions.subject``: the login callback answered 500;
- a CSV export read through psycopg's default cursor, which fetches the whole result into the API at once.

The SQLite halves are tests/unit/test_ticket_transition_race.py and tests/unit/test_oidc_stored_claims.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import String, event, inspect
from sqlalchemy.exc import DataError

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store import alembic_config, upgrade
from fleetpulse.alerts.store.models import Base
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from fleetpulse.contract.codec import decode, encode
from fleetpulse.contract.topics import Topics
from fleetpulse.contract.v1 import Component, DeadLetter, FeatureLogReason, FeatureLogRecord, RiskScore
from tests.alerts_support import NOW, T0, bulk_tickets, make_alert, make_inventory, pg_schema_url
from tests.unit.test_contract_poison import consumer_over
from tests.unit.test_oidc_stored_claims import attack_oversized_subject_callback, longest_subject_logs_in
from tests.unit.test_ticket_transition_race import (
    attack_concurrent_approvals,
    attack_concurrent_closes,
    attack_crossing_bulk_moves,
    slow_moves,
)
from tests.unit.test_tickets_api import PASSWORD
from tests.unit.test_tickets_export import export_settings

__all__ = ["slow_moves"]  # fixture
pytestmark = pytest.mark.integration
STORM_GROUP = "g" * 128
"""As long as the contract's ``ShortText`` allows."""


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    yield from pg_schema_url(postgres_url)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[TicketStore]:
    store = TicketStore.open(pg_url)
    yield store
    store.close()


# --- concurrent moves of one ticket --------------------------------------------------------------


def test_attack_concurrent_closes_one_wins_the_other_is_409(slow_moves: None, pg_url: str) -> None:
    attack_concurrent_closes(pg_url)


def test_attack_concurrent_approvals_record_one_move(slow_moves: None, pg_url: str) -> None:
    attack_concurrent_approvals(pg_url)


def test_attack_crossing_bulk_moves_one_wins_whole_without_deadlock(slow_moves: None, pg_url: str) -> None:
    attack_crossing_bulk_moves(pg_url)


# --- values the contract allows and PostgreSQL must store, or refuse without a crash loop -------------


def test_attack_a_storm_group_as_long_as_the_contract_allows_is_stored_whole(pg_store: TicketStore) -> None:
    service = TicketService(pg_store, AlertSettings())
    assert service.apply_alert(make_alert("pc-9", storm_group=STORM_GROUP), NOW) == "opened"
    assert [s.group_id for s in pg_store.storms()] == [STORM_GROUP]
    assert pg_store.list_tickets()[0].storm_group == STORM_GROUP


def score(device_id: str, component_id: str = "") -> RiskScore:
    return RiskScore(
        device_id=device_id,
        component=Component.DISK,
        component_id=component_id,
        risk=0.4,
        model_name="disk-gbm",
        model_version="1.2.0",
        report_seq=1,
        collected_at=T0,
        scored_at=T0,
    )


def feature_log(device_id: str, hardware_model: str = "ThinkPad T14 Gen 2") -> FeatureLogRecord:
    return FeatureLogRecord(
        device_id=device_id,
        component=Component.DISK,
        hardware_model=hardware_model,
        day=T0.date(),
        reason=FeatureLogReason.DAILY,
        features={"power_on_hours": 31000.0},
        risk=0.4,
        model_name="disk-gbm",
        model_version="1.2.0",
        collected_at=T0,
        scored_at=T0,
        report_seq=1,
    )


def test_attack_records_postgresql_refuses_are_dead_lettered_and_the_poll_goes_on(
    pg_store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One poll: each kind of record once as PostgreSQL takes it and once with a NUL character it refuses
    (the contract allows it). The refused ones are dead-lettered with the database's reason, everything
    else is applied, and the poll is committed: no record is retried forever or lost without a trace."""
    topics = Topics()
    fresh = datetime.now(UTC) - timedelta(hours=1)
    values = [
        (topics.alerts, encode(make_alert("pc-1", storm_group=STORM_GROUP))),
        (topics.alerts, encode(make_alert("pc-2", component_id="sn\x00"))),  # poison
        (topics.inventory, encode(make_inventory("pc-3", updated_at=fresh))),
        (topics.inventory, encode(make_inventory("pc-4", site="Town\x00Hall", updated_at=fresh))),  # poison
        (topics.scores, encode(score("pc-3"))),
        (topics.scores, encode(score("pc-4", component_id="sn\x00"))),  # poison
        (topics.features, encode(feature_log("pc-3"))),
        (topics.features, encode(feature_log("pc-4", hardware_model="T14\x00"))),  # poison
        (topics.alerts, encode(make_alert("pc-5"))),
    ]
    consumer, kafka_consumer, producer = consumer_over(values, pg_store, monkeypatch)
    try:
        assert consumer.poll_once() == len(values)
    finally:
        consumer.close()
    assert kafka_consumer.commits == 1
    letters = [decode(value, DeadLetter) for topic, value in producer.sent if topic == topics.dead_letter]
    assert sorted((d.offset, d.error_kind) for d in letters) == [(n, "processing_error") for n in (1, 3, 5, 7)]
    for letter in letters:
        assert letter.reason == (
            "the ticket store refused the record (DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes)"
        )
    assert sorted(t.device_id for t in pg_store.list_tickets()) == ["pc-1", "pc-5"]
    assert [s.group_id for s in pg_store.storms()] == [STORM_GROUP]
    assert pg_store.get_device("pc-3") is not None
    assert pg_store.get_device("pc-4") is None
    results = consumer.stats.results
    assert (results["inventory"], results["history"], results["feature_log"]) == (1, 1, 1)


# --- the schema the migrations build ---------------------------------------------------------------


def column_lengths(store: TicketStore) -> tuple[int | None, int | None]:
    """The declared lengths of ``storm_groups.group_id`` and ``tickets.storm_group``."""
    found = inspect(store.engine)
    lengths: list[int | None] = []
    for table, column in (("storm_groups", "group_id"), ("tickets", "storm_group")):
        declared = next(c["type"] for c in found.get_columns(table) if c["name"] == column)
        assert isinstance(declared, String)
        lengths.append(declared.length)
    return lengths[0], lengths[1]


def test_the_migrated_schema_matches_the_models(pg_store: TicketStore) -> None:
    """Every column as long as the model says (and the model as long as the contract): no difference at all."""
    with pg_store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert differences == []
    assert column_lengths(pg_store) == (128, 128)


def test_the_storm_group_migration_downgrades_only_without_losing_a_group(pg_store: TicketStore) -> None:
    def downgrade_to_0008() -> None:
        with pg_store.engine.begin() as connection:
            cfg = alembic_config(pg_store.engine)
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0008")

    downgrade_to_0008()
    assert column_lengths(pg_store) == (64, 64)
    upgrade(pg_store.engine)
    assert column_lengths(pg_store) == (128, 128)
    TicketService(pg_store, AlertSettings()).apply_alert(make_alert("pc-9", storm_group=STORM_GROUP), NOW)
    with pytest.raises(DataError, match="too long"):
        downgrade_to_0008()  # shortening the column would cut the stored group id
    assert column_lengths(pg_store) == (128, 128)
    assert [s.group_id for s in pg_store.storms()] == [STORM_GROUP]


# --- the login callback ------------------------------------------------------------------------------


def test_attack_the_callback_refuses_an_oversized_subject(pg_store: TicketStore) -> None:
    attack_oversized_subject_callback(pg_store)


def test_the_callback_keeps_the_longest_allowed_subject_whole(pg_store: TicketStore) -> None:
    longest_subject_logs_in(pg_store)


# --- the CSV export ----------------------------------------------------------------------------------


def test_the_csv_export_streams_through_a_server_side_cursor(pg_url: str, pg_store: TicketStore) -> None:
    """psycopg's default cursor fetches the whole result into the client at once, however it is then read:
    the export must ask for a server-side (named) cursor, and still return every row in the queue's order."""
    bulk_tickets(pg_store, 2500)  # past two fetch chunks
    cursors: list[tuple[str, str]] = []

    def seen(_: object, cursor: object, statement: str, *__: object) -> None:
        cursors.append((type(cursor).__name__, statement))

    event.listen(pg_store.engine, "before_cursor_execute", seen)
    with TestClient(create_app(export_settings(pg_url), pg_store)) as client:
        response = client.get("/api/v1/tickets.csv", auth=("it", PASSWORD))
    event.remove(pg_store.engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.text
    exported = [row["device_id"] for row in csv.DictReader(io.StringIO(response.text))]
    assert exported == [t.device_id for t in pg_store.list_tickets(limit=10_000)]
    assert len(exported) == 2500
    streamed = [statement for kind, statement in cursors if kind == "ServerCursor"]
    assert len(streamed) == 1
    assert "FROM tickets" in streamed[0]
    assert "ORDER BY" in streamed[0]

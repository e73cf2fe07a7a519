"""Topic creation under least-privilege ACLs (streams/kafka_admin.py ``ensure_topics``), against a fake admin client
that answers as Kafka's authorizer does; tests/integration/test_kafka_acls.py runs the same on a real broker."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams import kafka_admin
from fleetpulse.streams.kafka_admin import TopicCreationError, ensure_topics

T = Topics()
AUTHORIZATION_FAILED, UNKNOWN_TOPIC, INVALID_REPLICATION = 29, 3, 38


class FakeAdmin:
    """A broker with ``existing`` topics, a principal that may see ``visible`` and create ``creatable`` ones
    (None: anything, as on the unauthenticated local stack)."""

    def __init__(
        self, existing: set[str], visible: set[str] | None = None, creatable: set[str] | None = None, refuse: int = 0
    ) -> None:
        self.existing = set(existing)
        self.visible = visible
        self.creatable = creatable
        self.refuse = refuse
        self.create_requests: list[list[str]] = []
        self.configs = {name: kafka_admin.topic_configs(T)[name] for name in existing}  # as the manifests set them

    def __call__(self, **_: Any) -> FakeAdmin:
        return self

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _sees(self, name: str) -> bool:
        return self.visible is None or name in self.visible

    async def list_topics(self) -> list[str]:
        return sorted(name for name in self.existing if self._sees(name))

    async def create_topics(self, new_topics: list[Any]) -> Any:
        self.create_requests.append([t.name for t in new_topics])
        errors = []
        for topic in new_topics:
            if self.creatable is not None and topic.name not in self.creatable:
                errors.append((topic.name, AUTHORIZATION_FAILED, "Authorization failed."))  # exists or not: not told
            elif topic.name in self.existing:
                errors.append((topic.name, 36, "exists"))
            elif self.refuse:
                errors.append((topic.name, self.refuse, "Replication factor: 2 larger than available brokers: 1."))
            else:
                self.existing.add(topic.name)
                self.configs[topic.name] = dict(topic.topic_configs)
                errors.append((topic.name, 0, None))
        return SimpleNamespace(topic_errors=errors)

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        def one(name: str) -> dict[str, Any]:
            if not self._sees(name):
                return {"topic": name, "error_code": AUTHORIZATION_FAILED, "partitions": []}
            if name not in self.existing:
                return {"topic": name, "error_code": UNKNOWN_TOPIC, "partitions": []}
            return {"topic": name, "error_code": 0, "partitions": [{"partition": 0, "leader": 1}]}

        return [one(name) for name in names]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        def one(name: str) -> tuple[Any, ...]:
            if not self._sees(name):
                return (AUTHORIZATION_FAILED, "Authorization failed.", 2, name, [])
            return (0, None, 2, name, [(key, value, False, False, False) for key, value in self.configs[name].items()])

        return [SimpleNamespace(resources=[one(resource.name) for resource in resources])]


def run(admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(kafka_admin, "AIOKafkaAdminClient", admin)
    return asyncio.run(ensure_topics(KafkaSettings(), 12, 1))


def test_an_unrestricted_principal_creates_every_missing_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin(existing={T.health})
    assert sorted(run(admin, monkeypatch)) == sorted(set(T.all()) - {T.health})
    assert admin.existing == set(T.all())


def test_topics_a_principal_may_neither_create_nor_see_are_left_to_the_cluster(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ticket consumer in Kubernetes: every topic exists (kafka-topics.yaml), it sees its own seven only."""
    own = {T.alerts, T.inventory, T.mobile_inventory, T.scores, T.features, T.labels, T.dead_letter}
    admin = FakeAdmin(existing=set(T.all()), visible=own, creatable=set())
    with caplog.at_level(logging.INFO, logger="fleetpulse.streams.kafka_admin"):
        assert run(admin, monkeypatch) == []
    assert admin.create_requests == [[t for t in T.all() if t not in own]]
    (record,) = [r for r in caplog.records if r.name == "fleetpulse.streams.kafka_admin"]
    assert record.fields["topics"] == sorted(set(T.all()) - own)  # type: ignore[attr-defined]


def test_a_missing_topic_the_principal_uses_stops_the_service_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its scores topic was never created, and the principal may see but not create it: fail now, naming it,
    rather than wait on a topic nobody will create."""
    own = {T.alerts, T.scores}
    admin = FakeAdmin(existing=set(T.all()) - {T.scores}, visible=own, creatable=set())
    with pytest.raises(TopicCreationError, match=rf"{T.scores} do not exist and this Kafka principal may not create"):
        run(admin, monkeypatch)


def test_a_principal_creates_what_it_may_and_leaves_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin(existing=set(), visible={T.dead_letter}, creatable={T.dead_letter})
    assert run(admin, monkeypatch) == [T.dead_letter]
    # one that sees every topic but may create one: the others it sees missing are named
    with pytest.raises(TopicCreationError, match=T.health):
        run(FakeAdmin(existing=set(), creatable={T.dead_letter}), monkeypatch)


def test_an_existing_topic_with_other_retention_is_named_with_each_differing_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Created by hand with the broker's defaults: a week of labels where retraining needs a year."""
    admin = FakeAdmin(existing=set(T.all()))
    admin.configs[T.labels] = {}
    with caplog.at_level(logging.INFO, logger="fleetpulse.streams.kafka_admin"):
        assert run(admin, monkeypatch) == []
    (record,) = [r for r in caplog.records if r.name == "fleetpulse.streams.kafka_admin"]
    assert record.levelno == logging.WARNING
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["topic"] == T.labels
    assert fields["settings"]["retention.ms"] == {
        "topic": None,
        "policy": kafka_admin.topic_configs(T)[T.labels]["retention.ms"],
    }


def test_other_refusals_still_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TopicCreationError, match="refused to create 11 topic"):
        run(FakeAdmin(existing=set(), refuse=INVALID_REPLICATION), monkeypatch)

"""Every component that creates topics does it with ``[streams] partitions`` and ``replication_factor``.

Whichever starts first on a fresh cluster (``fleetpulse simulate``, the ticket consumer, the
worker) decides the partition count for good, so none of them may fall back to a fixed one.
Against the real broker (one node: a replication factor of 2 cannot be met, which shows the
setting reaches the broker, and the refusal must be an error, not topics the broker then
auto-creates with its own defaults).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from fleetpulse.alerts.consumer import TicketConsumer
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.cli import app
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams.kafka_admin import TopicCreationError, aiokafka_auth, create_configured_topics, topic_configs
from fleetpulse.streams.settings import StreamSettings

pytestmark = pytest.mark.integration


def _partition_counts(kafka: KafkaSettings) -> dict[str, int]:
    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
        await admin.start()
        try:
            described = await admin.describe_topics(Topics(prefix=kafka.topic_prefix).all())
            return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        finally:
            await admin.close()

    return asyncio.run(describe())


def _topic_configs(kafka: KafkaSettings, names: list[str]) -> dict[str, dict[str, str]]:
    """What the broker holds for each topic, as it answers DescribeConfigs."""

    async def describe() -> dict[str, dict[str, str]]:
        admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
        await admin.start()
        try:
            answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
            return {
                resource[3]: {entry[0]: entry[1] for entry in resource[4]}
                for answer in answers
                for resource in answer.resources
            }
        finally:
            await admin.close()

    return asyncio.run(describe())


def test_simulate_creates_topics_with_the_configured_partitions(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_settings.bootstrap_servers}"\n'
        f'topic_prefix = "{kafka_settings.topic_prefix}"\n[streams]\npartitions = 3\n'
    )
    result = CliRunner().invoke(
        app, ["--config", str(config), "simulate", "--devices", "5", "--days", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    counts = _partition_counts(kafka_settings)
    assert set(counts) == set(Topics(prefix=kafka_settings.topic_prefix).all())
    assert set(counts.values()) == {3}
    wanted = topic_configs(Topics(prefix=kafka_settings.topic_prefix))
    held = _topic_configs(kafka_settings, list(wanted))
    for name, config in wanted.items():  # retention in time and size, as the cluster's manifests set it
        assert {key: held[name].get(key) for key in config} == config, name


def test_ticket_consumer_creates_topics_with_the_configured_partitions(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    alerts = AlertSettings(store_url=f"sqlite:///{tmp_path / 'tickets.db'}")
    TicketConsumer(alerts, kafka_settings, StreamSettings(partitions=5)).close()
    counts = _partition_counts(kafka_settings)
    assert set(counts) == set(Topics(prefix=kafka_settings.topic_prefix).all())
    assert set(counts.values()) == {5}


def test_ticket_consumer_asks_for_the_configured_replication(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    alerts = AlertSettings(store_url=f"sqlite:///{tmp_path / 'tickets.db'}")
    with pytest.raises(TopicCreationError, match="replication factor of 2"):
        TicketConsumer(alerts, kafka_settings, StreamSettings(replication_factor=2))
    assert _partition_counts(kafka_settings) == {}


def test_a_topic_created_before_the_retention_policy_is_reported_not_changed(kafka_settings: KafkaSettings) -> None:
    """A topic that exists with the broker's defaults (made by an older version, or by hand) keeps them: a
    service never alters a topic, but says at start which settings differ from the policy."""
    topics = Topics(prefix=kafka_settings.topic_prefix)

    async def create_bare_labels_topic() -> None:
        admin = AIOKafkaAdminClient(**aiokafka_auth(kafka_settings))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topics.labels, 1, 1)])
            # listed a moment after its creation; listed, not described: describing the topics not yet
            # created would have the test broker auto-create them with its defaults
            for _ in range(150):
                if topics.labels in await admin.list_topics():
                    break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    asyncio.run(create_bare_labels_topic())
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("fleetpulse.streams.kafka_admin")  # whatever the CLI tests did to the root's handlers
    logger.addHandler(handler)
    try:
        create_configured_topics(kafka_settings, StreamSettings(partitions=1))
    finally:
        logger.removeHandler(handler)
    drifted = [r for r in records if r.getMessage().startswith("topic retention differs from the policy")]
    assert [r.fields["topic"] for r in drifted] == [topics.labels]  # type: ignore[attr-defined]
    year_ms = str(365 * 24 * 3600 * 1000)
    assert drifted[0].fields["settings"]["retention.ms"]["policy"] == year_ms  # type: ignore[attr-defined]
    assert _topic_configs(kafka_settings, [topics.labels])[topics.labels]["retention.ms"] != year_ms  # not altered

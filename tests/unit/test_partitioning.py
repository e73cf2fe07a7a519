"""The worker's idea of a key's home partition is every producer's: aiokafka's and kafka-python's."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner as KafkaPythonPartitioner

from fleetpulse.streams import partitioning


@given(key=st.binary(max_size=300))
def test_murmur2_is_aiokafkas(key: bytes) -> None:
    assert partitioning.murmur2(key) == aiokafka_murmur2(key)
    assert partitioning.key_hash(key) == aiokafka_murmur2(key)  # the extension's, where it is built


@given(key=st.binary(max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_a_remembered_key_partition_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    all_partitions = tuple(range(partitions))
    expected = DefaultPartitioner()(key, list(all_partitions), [])
    assert partitioning.default_partition(key, all_partitions) == expected
    assert partitioning.default_partition(key, all_partitions) == expected


class _Cluster:
    """The two metadata questions kafka-python's partitioner asks, for one topic."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"health"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@given(key=st.binary(max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_agents_partition_keys_as_the_worker_expects(key: bytes, partitions: int) -> None:
    """Agents and the MDM bridge produce with kafka-python: its partitioner must agree, or every report is refused."""
    placed = KafkaPythonPartitioner().partition("health", key, key, None, None, _Cluster(partitions))
    assert placed == partitioning.default_partition(key, tuple(range(partitions)))

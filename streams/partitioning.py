"""Where Kafka's default partitioner puts a keyed record, computed as every producer of ours computes it.

Agents, the MDM bridge and IT's tools produce with kafka-python's default partitioner, the worker
with aiokafka's: both place a keyed record on ``murmur2(key) % partitions``. A device's state lives
in the table partition its id hashes to, so the worker refuses a record found on any other
partition (a producer may pick any partition; Kafka's ACLs cannot stop it).
"""

from __future__ import annotations

import functools
import sys
from array import array

if sys.byteorder != "little" or array("I").itemsize != 4:  # as the state codec, which refuses them too
    raise ImportError("murmur2 reads keys as little-endian 4-byte words, as arrays hold them here")

KEY_PARTITIONS_KEPT = 262_144
"""Record keys whose default partition is remembered (a device id or feature-log key: ~0.2 KB each)."""

_MURMUR_M = 0x5BD1E995
_U32 = 0xFFFFFFFF


@functools.lru_cache(maxsize=KEY_PARTITIONS_KEPT)
def default_partition(key: bytes, all_partitions: tuple[int, ...]) -> int:
    """Kafka's default partition of ``key`` among ``all_partitions`` (``DefaultPartitioner``'s), remembered:
    the worker reads and produces the same device keys every batch. Feature-log keys name a day, so most are new."""
    return all_partitions[(key_hash(key) & 0x7FFFFFFF) % len(all_partitions)]


def murmur2(data: bytes) -> int:
    """Kafka's MurmurHash2 of ``data``, as aiokafka's ``murmur2`` computes it, a 32-bit word per step.

    aiokafka's pure-Python version assembles each word from four indexed bytes and masks after
    every operation: about 12 µs for a feature-log key, twice what this takes
    (``tests/unit/test_faust_internals.py`` checks that they agree).
    """
    m, u32 = _MURMUR_M, _U32
    length = len(data)
    end = length & ~3
    h = 0x9747B28C ^ length
    for k in array("I", data[:end]):  # native order: the module refuses a big-endian machine at import
        k = (k * m) & u32
        h = ((h * m) & u32) ^ (((k ^ (k >> 24)) * m) & u32)
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * m) & u32
    h ^= h >> 13
    h = (h * m) & u32
    return h ^ (h >> 15)


try:  # optional (``make native``): about 0.1 µs a key against this module's 5 µs
    from fleetpulse.streams._native import murmur2 as key_hash
except ImportError:  # pragma: no cover - exercised by installs without the extension
    key_hash = murmur2

"""Decoded device records of this worker's partitions, kept between batches within a memory cap.

Decoding a device's table value builds its whole pydantic record: the largest single cost
of a report (``benchmarks/stream_profile.py``: ``state_decode``). A device reports again
within minutes, to the same worker, so the worker keeps the record it stored and serves it
back instead of decoding it.

Two rules keep a served record exactly what a fresh decode would give:

* an entry is served only while the table holds the very bytes it was decoded from or
  encoded to: a value replaced under it (changelog recovery, a standby taking over, a
  rebalance that moved the partition away and back) is decoded again;
* entries are lent, not shared: :meth:`DecodedCache.take` removes the entry, because the
  processor changes the records it looks up in place. The caller puts back the record
  whose bytes it stored (or an unchanged one it did not store); a record a batch may have
  changed without storing (a processing error, a batch that failed) is never put back.

Size is estimated per entry from the encoded length (:func:`entry_bytes`). Once the cap is
reached, a new record is kept only in place of an entry unused for :data:`IDLE_EVICTION_S`
(a retired or long-offline device); otherwise it is not kept. Devices report in cycles, so
evicting the least recently used entry would always evict the device that reports next
(no hits at all once the fleet outgrows the cap); keeping the entries held serves a
cap/fleet share of every cycle from the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Value = TypeVar("Value")

IDLE_EVICTION_S = 7 * 24 * 3600.0
"""An entry unused this long gives way to a new one once the cache is full (a device off for a week)."""

RECORD_OVERHEAD_BYTES = 10_600
"""Python objects of a decoded record besides its history arrays (measured: ~10.6 KB per ``DeviceRecord``)."""


ENCODED_OVERHEAD_BYTES = 200
"""An entry that keeps only the bytes: its key, tuple and the bytes object's header."""


def entry_bytes(encoded: int) -> int:
    """Memory of one entry with an ``encoded``-byte value: the record's objects, its history arrays
    (about the encoded length: they are packed as stored), and the kept value itself.

    Measured with ``tracemalloc`` on simulated devices after 1, 30 and 90 days of reports
    (1.4, 4.9 and 7.2 KB encoded; 12.0, 15.4 and 17.8 KB decoded), within 1 %.
    """
    return RECORD_OVERHEAD_BYTES + 2 * encoded


class DecodedCache(Generic[Value]):
    """(partition, key) -> the decoded value of the bytes stored there, in order of last use."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: dict[tuple[int, bytes], tuple[bytes, Value | None, int, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, partition: int, key: bytes, stored: bytes) -> Value | None:
        """The value decoded from ``stored`` if cached, left in place: no use recorded, no hit or miss counted
        (a periodic pass over every device must not make idle entries look used). Read it, never change it."""
        entry = self._entries.get((partition, key))
        return entry[1] if entry is not None and entry[0] == stored else None

    def holds(self, partition: int, key: bytes, stored: bytes) -> bool:
        """Whether ``stored`` (the bytes in the table) is what this worker last wrote or decoded for ``key``:
        a value it has validated, which the native fast path may read. Nothing is moved or counted."""
        entry = self._entries.get((partition, key))
        return entry is not None and entry[0] == stored

    def discard(self, partition: int, key: bytes) -> None:
        """Forget ``key``'s entry (its table value was replaced or deleted outside a batch)."""
        entry = self._entries.pop((partition, key), None)
        if entry is not None:
            self.size_bytes -= entry[2]

    def take(self, partition: int, key: bytes, stored: bytes) -> Value | None:
        """Remove and return the value decoded from ``stored``, or None (the caller decodes ``stored``)."""
        entry = self._entries.pop((partition, key), None)
        if entry is not None:
            self.size_bytes -= entry[2]
            if entry[0] == stored and entry[1] is not None:
                self.hits += 1
                return entry[1]
        self.misses += 1
        return None

    def lookup(self, partition: int, key: bytes, stored: bytes, decode: Callable[[bytes], Value]) -> Value:
        """The value of ``stored``: the cached one (removed, see :meth:`take`) or ``decode(stored)``."""
        value = self.take(partition, key, stored)
        return decode(stored) if value is None else value

    def put(self, partition: int, key: bytes, stored: bytes, value: Value | None) -> None:
        """Keep ``value``, which must be exactly what decoding ``stored`` (the bytes now in the table) gives;
        None: only the bytes, which this worker wrote (the native fast path's), to be decoded when needed."""
        size = entry_bytes(len(stored)) if value is not None else ENCODED_OVERHEAD_BYTES + len(stored)
        if size > self.max_bytes:
            return
        old = self._entries.pop((partition, key), None)
        if old is not None:
            self.size_bytes -= old[2]
        now = self._clock()
        while self.size_bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            if now - self._entries[oldest][3] < IDLE_EVICTION_S:
                return  # full of devices still reporting: keep those, not this one
            self.size_bytes -= self._entries.pop(oldest)[2]
        self._entries[(partition, key)] = (stored, value, size, now)
        self.size_bytes += size

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the entries of ``partitions`` (revoked, or rewritten by changelog recovery)."""
        dropped = set(partitions)
        if not dropped or not self._entries:
            return
        for slot in [slot for slot in self._entries if slot[0] in dropped]:
            self.size_bytes -= self._entries.pop(slot)[2]

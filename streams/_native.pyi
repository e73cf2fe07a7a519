"""The stream worker's native fast path (``streams/native``): see ``Processor.fast_path``."""

class Core:
    def __init__(
        self,
        max_clock_skew: int,
        max_backdate: int,
        rescore_interval: int,
        event_rescore_gap: int,
        max_seq_jump: int,
        max_first_report_age: int | None,
    ) -> None: ...
    def fold(
        self, key: bytes, stored: bytes, value: bytes, mac: bytes | None, mobile: bool, now: int
    ) -> tuple[bytes, list[bytes], int, int] | None: ...

class Forest:
    def __init__(
        self,
        n_features: int,
        feature: bytes,
        threshold: bytes,
        child: bytes,
        value: bytes,
        roots: bytes,
        depth: int,
        baseline: float,
    ) -> None: ...
    def decision(self, rows: bytes) -> bytes: ...

def murmur2(data: bytes) -> int: ...

NOT_DUE: int
"""The report leaves its device's scoring as it is."""
DUE: int
"""The report scores its device; the value's ``scored_at`` is the report's time."""
FIRST_OF_DAY: int
"""The report scores its device for the first time on its day (the feature log's daily record)."""

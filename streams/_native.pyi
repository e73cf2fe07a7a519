"""The stream worker's native fast path (``streams/native``): see ``Processor.fast_path``."""

class Core:
    def __init__(
        self, max_clock_skew: int, max_backdate: int, rescore_interval: int, event_rescore_gap: int
    ) -> None: ...
    def fold(
        self, key: bytes, stored: bytes, value: bytes, mac: bytes | None, mobile: bool, now: int
    ) -> tuple[bytes, list[bytes], int] | None: ...

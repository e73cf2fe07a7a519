"""Hot reload of the served models: a new champion is picked up without restarting the worker.

The worker polls the registry index (``registry.json``); when its bytes change it loads the
scorers again off the event loop (:func:`~fleetpulse.models.registry.load_scorers`, with every
integrity check) and swaps them into the processor between two batches, together with the
alert policy their stored operating points suggest. An index that fails verification after
the change is not served: the worker keeps the verified models it has and logs why (a
tampered index must not even downgrade the disk champion to the rule).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from fleetpulse.models.index import MAX_INDEX_BYTES, REGISTRY_FILE
from fleetpulse.models.registry import ScorerSet

log = logging.getLogger(__name__)


def index_fingerprint(registry_dir: Path) -> str | None:
    """SHA-256 of the registry index (None: no index, the rule scorers are champions).

    An index that cannot be read (a folder in its place, no permission) is a change too: loading it
    is then refused and the worker keeps the models it serves.
    """
    try:
        with (registry_dir / REGISTRY_FILE).open("rb") as index:  # beyond the bound it is refused anyway
            return hashlib.sha256(index.read(MAX_INDEX_BYTES + 1)).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable: {exc.errno}"


RELOAD_ATTEMPTS = 3
"""Loads of one changed index that fail for a reason that may pass (memory, say) before it waits for the
next change: a failure that does not pass must not cost a full load at every registry check."""


@dataclass
class RegistryWatch:
    """Tells when the index changed since the scorers in use were loaded."""

    registry_dir: Path
    seen: str | None = None
    loaded: str | None = None
    attempts: int = 0

    def __post_init__(self) -> None:
        self.seen = self.loaded = index_fingerprint(self.registry_dir)

    def changed(self) -> bool:
        current = index_fingerprint(self.registry_dir)
        if current == self.seen:
            return False
        self.loaded, self.seen = self.seen, current
        self.attempts += 1
        return True

    def retry(self) -> bool:
        """Report the last change again at the next check, since loading it failed for a reason that may pass
        (a refusal is final: the same bytes would be refused again); False once it failed ``RELOAD_ATTEMPTS``
        times."""
        if self.attempts >= RELOAD_ATTEMPTS:
            self.attempts = 0
            return False
        self.seen = self.loaded
        return True

    def settled(self) -> None:
        """The last change was served or refused: the next one gets its own attempts."""
        self.attempts = 0


def accept(current: ScorerSet, loaded: ScorerSet, floor: int = 0) -> bool:
    """Whether ``loaded`` may replace ``current``: only when every registered artifact verified, from an
    index no older than the one served nor than ``floor``, the newest any worker served (a signed old
    copy put back would bring back a demoted model)."""
    served = max(current.generation, floor)
    if loaded.generation < served:
        log.error(
            "registry index is older than the one served: serving the models loaded before",
            extra={"fields": {"generation": loaded.generation, "serving_generation": served}},
        )
        return False
    if loaded.refused:
        log.error(
            "registry changed but did not verify: serving the models loaded before",
            extra={"fields": {"refused": loaded.refused, "serving": current.describe()}},
        )
        return False
    log.warning(
        "registry changed: serving the new models",
        extra={"fields": {"before": current.describe(), "after": loaded.describe()}},
    )
    return True

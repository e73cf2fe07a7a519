"""Which scorers run: champions (may raise alerts) and challengers (scored and stored only).

``load_scorers`` reads the registry index ``<registry_dir>/registry.json`` written by
``fleetpulse train``::

    {"format": 2,
     "champions": {"disk": "<artifact id>"}, "challengers": {"disk": ["<id>", ...]},
     "artifacts": {"<id>": {"model.skops": "<sha256>", "metadata.json": "<sha256>"}},
     "hmac": "<hex>"}

Integrity is anchored outside the artifact: the index holds the SHA-256 of both files of
every registered artifact, and with ``models.signing_key`` set the index itself carries
an HMAC-SHA256 under that key, so whoever can write the registry folder but not the
server's configuration cannot change a model or its alert threshold. A packaged registry
(inside the installed ``fleetpulse.models`` package) is trusted like the code next to it: its
own index's digests are verified, no signature is needed, nothing is written.

Artifact ids are plain folder names of the registry folder: no ``..``, no separators,
no symlink leading out of it. An artifact that fails any check is refused with the
reason, logged, and the worker serves the rule scorer for its component instead:
never the changed model. Without an index the rule scorers are champions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetpulse.contract import Component, RiskScore, ScorerRole
from fleetpulse.models.anomaly import AnomalyScorer
from fleetpulse.models.artifact import (
    ARTIFACT_FILES,
    METADATA_FILE,
    MODEL_FILE,
    ArtifactError,
    TrainedDiskScorer,
    artifact_digests,
)
from fleetpulse.models.base import Scorer
from fleetpulse.models.device_rules import MemoryRuleScorer, ThermalRuleScorer
from fleetpulse.models.rules import BatteryRuleScorer, DiskRuleScorer
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 2
ARTIFACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PACKAGE_ROOT = Path(__file__).resolve().parent
"""The installed ``fleetpulse.models`` package: a registry inside it ships with the code."""


@dataclass
class ScorerSet:
    champions: list[Scorer] = field(default_factory=list)
    challengers: list[Scorer] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Why registered artifacts are not served (shown in the worker's start-up line)."""

    def score(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        """All scores for ``states``, each labelled with its scorer's role."""
        out: list[RiskScore] = []
        for role, group in ((ScorerRole.CHAMPION, self.champions), (ScorerRole.CHALLENGER, self.challengers)):
            for scorer in group:
                for score in scorer.score_batch(states, now):
                    out.append(score if score.role is role else score.model_copy(update={"role": role}))
        return out

    def fit_baselines(self, states: Sequence[DeviceState]) -> None:
        """Refresh cohort baselines (anomaly scorer) from a population of states; call periodically."""
        for scorer in [*self.champions, *self.challengers]:
            fit = getattr(scorer, "fit_baseline", None)
            if fit is not None:
                fit(states)

    def alert_thresholds(self, cap: str) -> dict[Component, tuple[float, float]]:
        """(raise, clear) per component suggested by champions with stored operating points.

        The stream worker merges these under the configured policy
        (``AlertPolicy.with_defaults``): configured per-component thresholds always win.
        """
        out: dict[Component, tuple[float, float]] = {}
        for scorer in self.champions:
            suggest = getattr(scorer, "alert_thresholds", None)
            pair = suggest(cap) if suggest is not None else None
            if pair is not None:
                out[scorer.component] = pair
        return out

    def describe(self) -> dict[str, list[str]]:
        return {
            "champions": [f"{s.name}:{s.version}" for s in self.champions],
            "challengers": [f"{s.name}:{s.version}" for s in self.challengers],
            "refused": list(self.refused),
        }


def rule_scorers() -> ScorerSet:
    return ScorerSet(
        champions=[DiskRuleScorer(), BatteryRuleScorer(), ThermalRuleScorer(), MemoryRuleScorer(), AnomalyScorer()]
    )


def load_scorers(settings: ModelSettings) -> ScorerSet:
    """Scorers for the stream processor; rule scorers when no trained artifact is registered.

    A trained disk champion replaces the disk rule, which then runs as a challenger so the
    two stay comparable. A registry or artifact that fails verification is refused: the
    error is logged and kept in ``ScorerSet.refused``, and its component keeps the rule
    scorer, so a tampered threshold is never served and the worker still runs.
    """
    key = signing_key(settings)
    try:
        registry = read_registry(settings.registry_dir, key)
    except ArtifactError as exc:
        return _refused(rule_scorers(), settings.registry_dir / REGISTRY_FILE, exc)
    scorers = rule_scorers()
    champion_id = registry.champions.get(Component.DISK.value)
    if champion_id is not None:
        try:
            champion = registry.load(settings.registry_dir, champion_id)
        except ArtifactError as exc:
            _refused(scorers, champion_id, exc)
        else:
            scorers.champions = [champion, *(s for s in scorers.champions if s.component is not Component.DISK)]
            scorers.challengers.append(DiskRuleScorer())
    for artifact_id in registry.challengers.get(Component.DISK.value, []):
        try:
            scorers.challengers.append(registry.load(settings.registry_dir, artifact_id))
        except ArtifactError as exc:
            _refused(scorers, artifact_id, exc)
    return scorers


def _refused(scorers: ScorerSet, what: str | Path, exc: ArtifactError) -> ScorerSet:
    log.error(
        "model artifact refused: serving without it",
        extra={"fields": {"artifact": str(what), "error": str(exc)}},
    )
    scorers.refused.append(f"{what}: {exc}")
    return scorers


def signing_key(settings: ModelSettings) -> bytes | None:
    return settings.signing_key.get_secret_value().encode() if settings.signing_key is not None else None


def is_packaged(registry_dir: Path) -> bool:
    return registry_dir.resolve().is_relative_to(PACKAGE_ROOT)


def artifact_dir(registry_dir: Path, artifact_id: str) -> Path:
    """The folder of ``artifact_id``, refused unless it stays inside ``registry_dir`` (also through symlinks)."""
    if not ARTIFACT_ID.fullmatch(artifact_id):  # a leading letter or digit: never ".", ".." or a path
        raise ArtifactError(f"artifact id {artifact_id!r} is not a plain folder name of the registry")
    root = registry_dir.resolve()
    directory = registry_dir / artifact_id
    for path in (directory, *(directory / name for name in ARTIFACT_FILES)):
        if not path.resolve().is_relative_to(root):
            raise ArtifactError(f"{path} leads outside the registry folder {root}")
    return directory


@dataclass
class Registry:
    """The verified content of a registry index."""

    champions: dict[str, str] = field(default_factory=dict)
    challengers: dict[str, list[str]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "format": REGISTRY_FORMAT,
            "champions": self.champions,
            "challengers": self.challengers,
            "artifacts": self.artifacts,
        }

    def referenced(self) -> list[str]:
        ids = list(self.champions.values()) + [i for group in self.challengers.values() for i in group]
        return list(dict.fromkeys(ids))

    def digests(self, artifact_id: str) -> dict[str, str]:
        entry = self.artifacts.get(artifact_id)
        if entry is None:
            raise ArtifactError(f"artifact {artifact_id!r} is registered without digests in {REGISTRY_FILE}")
        return entry

    def load(self, registry_dir: Path, artifact_id: str) -> TrainedDiskScorer:
        return TrainedDiskScorer.from_artifact(artifact_dir(registry_dir, artifact_id), self.digests(artifact_id))


def index_mac(body: dict[str, Any], key: bytes) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def _migrate_hint(registry_dir: Path) -> str:
    return f"run `fleetpulse models migrate --registry-dir {registry_dir}` after checking its artifacts"


def _parse(registry_dir: Path) -> dict[str, Any] | None:
    path = registry_dir / REGISTRY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected an object")
    return data


def _structure(path: Path, data: dict[str, Any]) -> Registry:
    champions, challengers, artifacts = (
        data.get("champions", {}),
        data.get("challengers", {}),
        data.get("artifacts", {}),
    )
    valid = (
        isinstance(champions, dict)
        and all(isinstance(v, str) for v in champions.values())
        and isinstance(challengers, dict)
        and all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in challengers.values())
        and isinstance(artifacts, dict)
        and all(
            isinstance(v, dict) and all(isinstance(d, str) for d in v.values()) and set(v) == set(ARTIFACT_FILES)
            for v in artifacts.values()
        )
    )
    if not valid:
        raise ArtifactError(f"{path}: malformed registry index")
    return Registry(dict(champions), {k: list(v) for k, v in challengers.items()}, dict(artifacts))


def read_registry(registry_dir: Path, key: bytes | None = None) -> Registry:
    """The index of ``registry_dir`` after checking its format and, with ``key``, its HMAC.

    No index is an empty registry. An index of the format before digests is refused with
    the command that migrates it.
    """
    path = registry_dir / REGISTRY_FILE
    data = _parse(registry_dir)
    if data is None:
        return Registry()
    if data.get("format") != REGISTRY_FORMAT:
        raise ArtifactError(
            f"{path}: registry index without artifact digests (format {data.get('format', 1)}, "
            f"this version needs {REGISTRY_FORMAT}); {_migrate_hint(registry_dir)}"
        )
    registry = _structure(path, data)
    if key is not None and not is_packaged(registry_dir):
        mac = data.get("hmac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, index_mac(registry.body(), key)):
            state = "is not signed" if mac is None else "has a signature that does not match models.signing_key"
            raise ArtifactError(
                f"{path} {state}: the index or an artifact digest was changed, or the key differs from the "
                f"one it was signed with; {_migrate_hint(registry_dir)}"
            )
    return registry


def write_registry(registry_dir: Path, registry: Registry, key: bytes | None = None) -> None:
    """Write the index atomically, signed when ``key`` is given; digests only of referenced artifacts."""
    registry.artifacts = {i: registry.artifacts[i] for i in registry.referenced() if i in registry.artifacts}
    body: dict[str, Any] = registry.body()
    if key is not None:
        body["hmac"] = index_mac(registry.body(), key)
    registry_dir.mkdir(parents=True, exist_ok=True)
    tmp = registry_dir / f"{REGISTRY_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    tmp.replace(registry_dir / REGISTRY_FILE)


def register_artifact(
    registry_dir: Path,
    component: str,
    artifact_id: str,
    role: ScorerRole,
    keep_challengers: int = 2,
    key: bytes | None = None,
) -> Registry:
    """Record ``artifact_id`` with the digests of its files as they are now (just written by training);
    a new champion demotes the previous one to challenger."""
    registry = read_registry(registry_dir, key)
    digests = artifact_digests(artifact_dir(registry_dir, artifact_id))
    TrainedDiskScorer.from_artifact(registry_dir / artifact_id, digests)  # never register what cannot be served
    registry.artifacts[artifact_id] = digests
    challengers = [c for c in registry.challengers.get(component, []) if c != artifact_id]
    if role is ScorerRole.CHAMPION:
        previous = registry.champions.get(component)
        if previous and previous != artifact_id:
            challengers.insert(0, previous)
        registry.champions[component] = artifact_id
    else:
        challengers.insert(0, artifact_id)
    registry.challengers[component] = challengers[:keep_challengers]
    write_registry(registry_dir, registry, key)
    return registry


@dataclass
class Verdict:
    artifact_id: str
    error: str | None


def verify_registry(registry_dir: Path, key: bytes | None = None) -> list[Verdict]:
    """Every registered artifact checked as the worker would load it (the index errors raise)."""
    registry = read_registry(registry_dir, key)
    verdicts = []
    for artifact_id in registry.referenced():
        try:
            registry.load(registry_dir, artifact_id)
            verdicts.append(Verdict(artifact_id, None))
        except ArtifactError as exc:
            verdicts.append(Verdict(artifact_id, str(exc)))
    return verdicts


def migrate_registry(registry_dir: Path, key: bytes | None = None) -> Registry:
    """Rewrite the index in the current format, signed when ``key`` is given.

    An index of the old format gets the digests of the files as they are now: the operator
    vouches for them (``fleetpulse models migrate`` says so). Each artifact must still pass
    its old self-check (model digest inside its metadata) and the type check. An index
    already in the current format is re-signed only if every artifact matches its recorded
    digests: migration never launders a file changed after registration.
    """
    path = registry_dir / REGISTRY_FILE
    data = _parse(registry_dir)
    if data is None:
        raise ArtifactError(f"{path} not found: nothing to migrate")
    if data.get("format") == REGISTRY_FORMAT:
        registry = _structure(path, data)
        for artifact_id in registry.referenced():
            registry.load(registry_dir, artifact_id)
    else:
        registry = _structure(path, {**data, "artifacts": {}})
        for artifact_id in registry.referenced():
            directory = artifact_dir(registry_dir, artifact_id)
            digests = artifact_digests(directory)
            try:
                meta = json.loads((directory / METADATA_FILE).read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ArtifactError(f"{directory / METADATA_FILE}: invalid JSON ({exc})") from None
            if not isinstance(meta, dict) or meta.get("sha256") != digests[MODEL_FILE]:
                raise ArtifactError(f"{directory}: model file does not match the digest in its own metadata")
            TrainedDiskScorer.from_artifact(directory, digests)
            registry.artifacts[artifact_id] = digests
    write_registry(registry_dir, registry, key)
    return registry

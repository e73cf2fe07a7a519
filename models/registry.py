"""Which scorers run: champions (may raise alerts) and challengers (scored and stored only).

``load_scorers`` reads ``<registry_dir>/registry.json`` written by ``fleetpulse train``
(``{"champions": {"disk": "<artifact dir>"}, "challengers": {"disk": ["<dir>", ...]}}``);
without it the rule scorers are champions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetpulse.contract import Component, RiskScore, ScorerRole
from fleetpulse.models.anomaly import AnomalyScorer
from fleetpulse.models.artifact import ArtifactError, TrainedDiskScorer
from fleetpulse.models.base import Scorer
from fleetpulse.models.device_rules import MemoryRuleScorer, ThermalRuleScorer
from fleetpulse.models.rules import BatteryRuleScorer, DiskRuleScorer
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState


@dataclass
class ScorerSet:
    champions: list[Scorer] = field(default_factory=list)
    challengers: list[Scorer] = field(default_factory=list)

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
        }


def rule_scorers() -> ScorerSet:
    return ScorerSet(
        champions=[DiskRuleScorer(), BatteryRuleScorer(), ThermalRuleScorer(), MemoryRuleScorer(), AnomalyScorer()]
    )


def load_scorers(settings: ModelSettings) -> ScorerSet:
    """Scorers for the stream processor; rule scorers when no trained artifact is registered.

    A trained disk champion replaces the disk rule, which then runs as a challenger so
    the two stay comparable. A registered artifact that fails verification raises
    :class:`ArtifactError` (start-up fails loudly rather than silently serving rules).
    """
    registry = read_registry(settings.registry_dir)
    disk_champion = registry["champions"].get(Component.DISK.value)
    if disk_champion is None:
        scorers = rule_scorers()
    else:
        scorers = ScorerSet(
            champions=[
                TrainedDiskScorer.from_artifact(settings.registry_dir / disk_champion),
                BatteryRuleScorer(),
                ThermalRuleScorer(),
                MemoryRuleScorer(),
                AnomalyScorer(),
            ],
            challengers=[DiskRuleScorer()],
        )
    for artifact_id in registry["challengers"].get(Component.DISK.value, []):
        scorers.challengers.append(TrainedDiskScorer.from_artifact(settings.registry_dir / artifact_id))
    return scorers


REGISTRY_FILE = "registry.json"


def read_registry(registry_dir: Path) -> dict[str, Any]:
    path = registry_dir / REGISTRY_FILE
    if not path.is_file():
        return {"champions": {}, "challengers": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected an object")
    return {"champions": dict(data.get("champions", {})), "challengers": dict(data.get("challengers", {}))}


def register_artifact(
    registry_dir: Path, component: str, artifact_id: str, role: ScorerRole, keep_challengers: int = 2
) -> dict[str, Any]:
    """Record ``artifact_id``; a new champion demotes the previous one to challenger."""
    registry = read_registry(registry_dir)
    challengers: list[str] = [c for c in registry["challengers"].get(component, []) if c != artifact_id]
    if role is ScorerRole.CHAMPION:
        previous = registry["champions"].get(component)
        if previous and previous != artifact_id:
            challengers.insert(0, previous)
        registry["champions"][component] = artifact_id
    else:
        challengers.insert(0, artifact_id)
    registry["challengers"][component] = challengers[:keep_challengers]
    registry_dir.mkdir(parents=True, exist_ok=True)
    tmp = registry_dir / f"{REGISTRY_FILE}.tmp"
    tmp.write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    tmp.replace(registry_dir / REGISTRY_FILE)
    return registry

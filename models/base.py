"""The scorer plug-in interface.

Interface note for the stream processor (stable since the first models/ commit):

* state:    ``fleetpulse.models.state.{DeviceState, apply_report, apply_inventory}``.
  Keep one ``DeviceState`` per device (``model_dump_json``/``model_validate_json``).
  Drop ``report.seq <= state.last_seq`` yourself, then ``state = apply_report(state, report)``;
  ``apply_inventory(state, inventory)`` for inventory records. Both are pure.
* scorers:  ``scorers = fleetpulse.models.registry.load_scorers(settings.models)`` once at
  start-up -> ``ScorerSet``; per batch ``scorers.score(states, now)`` (champions and
  challengers; each ``RiskScore.role`` is set). Only ``role == CHAMPION`` scores may raise alerts.
  A scorer that raises costs only its own scores; pass a ``Counter`` to count its failures.
* drift:    ``fleetpulse.models.drift`` (see its docstring) for periodic PSI checks.

A :class:`Scorer` returns zero or more ``RiskScore`` per state (one per disk for disk
scorers, none when a state lacks the component or has never reported), with
``collected_at = state.last_collected_at``, ``report_seq = state.last_seq``,
``scored_at = now``, and up to 5 ``factors`` in plain words for the ticket.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from fleetpulse.contract import Component, Factor, RiskScore, ScorerRole
from fleetpulse.models.state import DeviceState

MAX_FACTORS = 5


@runtime_checkable
class Scorer(Protocol):
    name: str
    version: str
    component: Component

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        """Scores of every scorable component in ``states`` (vectorised over the batch)."""
        ...


def make_score(
    scorer: Scorer,
    state: DeviceState,
    now: datetime,
    *,
    risk: float,
    horizon_days: int,
    component_id: str = "",
    factors: Sequence[Factor] = (),
    days_to_failure: float | None = None,
    days_low: float | None = None,
    days_high: float | None = None,
    role: ScorerRole = ScorerRole.CHAMPION,
) -> RiskScore:
    """A contract ``RiskScore`` filled from the state, as every scorer must fill it."""
    assert state.last_collected_at is not None, "only states that have reported can be scored"
    return RiskScore(
        device_id=state.device_id,
        component=scorer.component,
        component_id=component_id,
        risk=min(1.0, max(0.0, risk)),
        horizon_days=horizon_days,
        days_to_failure=days_to_failure,
        days_to_failure_low=days_low,
        days_to_failure_high=days_high,
        model_name=scorer.name,
        model_version=scorer.version,
        role=role,
        report_seq=max(state.last_seq, 0),
        collected_at=state.last_collected_at,
        scored_at=now,
        factors=list(factors)[:MAX_FACTORS],
    )


def scorable(states: Sequence[DeviceState]) -> list[DeviceState]:
    """States that have at least one health report (inventory-only states cannot be scored)."""
    return [s for s in states if s.last_collected_at is not None]

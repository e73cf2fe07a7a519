"""The alert rule for one device component: a pure state machine over its risk scores.

Why a state machine and not a threshold: a single noisy score must not open a ticket
(``consecutive``), a risk hovering around the threshold must not flap
(hysteresis: ``clear_threshold`` < ``raise_threshold``), and a part that was just
cleared must not be re-raised minutes later (``cooldown``).

Purity is what makes replays safe: :func:`step` reads only its arguments and uses
the score's ``collected_at`` as the clock, so replaying the same scores from the same
state yields the same alerts with the same ``alert_id`` — the ticket consumer dedups on it.
The stream processor keeps one :class:`PolicyState` per (device_id, component,
component_id) in a Faust table, serialised with ``model_dump(mode="json")``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetpulse.contract.v1 import Alert, AlertState, Component, RiskScore, ScorerRole, UtcDatetime

Probability = Annotated[float, Field(gt=0.0, le=1.0)]
ClearProbability = Annotated[float, Field(ge=0.0, lt=1.0)]


class Thresholds(BaseModel):
    """Raise (enter) and clear (exit) risk of one component's scores.

    Per component because scorers live on different scales: the rule scorers emit fixed
    levels (0.5 flagged, 0.9 critical) while a calibrated disk model's probabilities of
    failure within 30 days are mostly far below 0.5 even for drives that do fail.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    raise_threshold: Probability
    clear_threshold: ClearProbability

    @model_validator(mode="after")
    def _hysteresis(self) -> Thresholds:
        if self.clear_threshold >= self.raise_threshold:
            raise ValueError(
                f"clear_threshold ({self.clear_threshold}) must be below raise_threshold ({self.raise_threshold})"
            )
        return self


_MAX_KEY_CHARS = 86
"""alert_id is a ShortText (<= 128 chars): longer keys get a hashed component_id (64+1+7+1+13 = 86)."""


class AlertPolicy(BaseModel):
    """Thresholds of the rule; one policy for the whole fleet, set in ``[alerts.policy]``.

    ``raise_threshold``/``clear_threshold`` apply to every component without an entry in
    ``components`` (``[alerts.policy.components.disk]``). A component left out of the
    config can get its thresholds from the served model (:meth:`with_defaults`, e.g. a
    trained disk model's operating point at a false-alarm cap, stored in its artifact).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    raise_threshold: Probability = 0.5
    clear_threshold: ClearProbability = 0.3
    components: dict[Component, Thresholds] = Field(
        default_factory=dict, description="per-component raise/clear thresholds; configured values always win"
    )
    consecutive: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="scores in a row at or above raise_threshold before an alert is raised"
    )
    clear_consecutive: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="scores in a row below clear_threshold before a raised alert clears"
    )
    cooldown: Annotated[timedelta, Field(ge=timedelta(0), le=timedelta(days=3650))] = Field(
        default=timedelta(days=7),
        description="after a clear, the same component is not raised again within this event-time window",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertPolicy:
        if self.clear_threshold >= self.raise_threshold:
            raise ValueError(
                f"clear_threshold ({self.clear_threshold}) must be below raise_threshold ({self.raise_threshold})"
            )
        return self

    def thresholds(self, component: Component) -> Thresholds:
        """The raise/clear pair that applies to ``component``."""
        configured = self.components.get(component)
        if configured is not None:
            return configured
        # already validated as a pair by _hysteresis; skip re-validation on this hot path
        return Thresholds.model_construct(raise_threshold=self.raise_threshold, clear_threshold=self.clear_threshold)

    def at_raise_level(self, score: RiskScore) -> bool:
        """Whether ``score`` counts towards raising its component (before ``consecutive`` and cooldown)."""
        # read the pair without building a Thresholds: this runs for every champion score
        configured = self.components.get(score.component)
        return score.risk >= (self.raise_threshold if configured is None else configured.raise_threshold)

    def below_clear_level(self, score: RiskScore) -> bool:
        """Whether ``score`` counts towards clearing its component's open alert."""
        configured = self.components.get(score.component)
        return score.risk < (self.clear_threshold if configured is None else configured.clear_threshold)

    def with_defaults(self, defaults: Mapping[Component, Thresholds]) -> AlertPolicy:
        """A copy where components without configured thresholds take ``defaults``."""
        merged = {**defaults, **self.components}
        return self.model_copy(update={"components": merged})


class PolicyState(BaseModel):
    """What the rule remembers about one component between scores (JSON round-trips losslessly)."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer version's fields (DeviceRecord's docstring)

    raised: bool = False
    above: Annotated[int, Field(ge=0)] = Field(default=0, description="consecutive scores >= raise_threshold")
    below: Annotated[int, Field(ge=0)] = Field(default=0, description="consecutive scores < clear_threshold")
    raise_seq: Annotated[int, Field(ge=0)] = Field(default=0, description="how many times this component was raised")
    raised_alert_id: str | None = Field(default=None, description="id of the open raise, echoed by its clear")
    cleared_at: UtcDatetime | None = None
    last_at: UtcDatetime | None = Field(default=None, description="event time of the last accepted score")
    last_report_seq: int | None = None


_FIRST_STATE = PolicyState()
"""A component's state before its first score (frozen, so one instance serves every component)."""


def _component_key(score: RiskScore) -> str:
    key = f"{score.device_id}:{score.component.value}:{score.component_id}"
    if len(key) <= _MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(score.component_id.encode()).hexdigest()[:12]
    return f"{score.device_id}:{score.component.value}:h{digest}"


def _is_replay(state: PolicyState, score: RiskScore) -> bool:
    """A score not newer than the last accepted one (duplicate or out of order) changes nothing."""
    if state.last_at is None or state.last_report_seq is None:
        return False
    return (score.collected_at, score.report_seq) <= (state.last_at, state.last_report_seq)


def _alert(score: RiskScore, state: AlertState, alert_id: str) -> Alert:
    return Alert(
        alert_id=alert_id,
        device_id=score.device_id,
        component=score.component,
        component_id=score.component_id,
        state=state,
        risk=score.risk,
        days_to_failure=score.days_to_failure,
        days_to_failure_low=score.days_to_failure_low,
        days_to_failure_high=score.days_to_failure_high,
        model_name=score.model_name,
        model_version=score.model_version,
        factors=score.factors,
        at=score.collected_at,
        report_seq=score.report_seq,
    )


def step(
    policy: AlertPolicy, state: PolicyState | None, score: RiskScore, *, explained: bool = False
) -> tuple[PolicyState, Alert | None]:
    """Advance one component's rule by one score; returns the new state and the alert it caused, if any.

    Challenger scores never raise tickets (they are shadow models under evaluation), and
    duplicate or out-of-order scores are ignored, so at-least-once delivery is harmless.
    ``explained``: a more specific diagnosis of the same device accounts for this score (a
    device anomaly driven by heat while the cooling rule is raised), so it counts as not
    above the raise threshold: one cause, one ticket. An open alert still clears as usual.
    """
    state = state or _FIRST_STATE
    if score.role is not ScorerRole.CHAMPION or _is_replay(state, score):
        return state, None
    seen = {"last_at": score.collected_at, "last_report_seq": score.report_seq}

    if not state.raised:
        above = state.above + 1 if policy.at_raise_level(score) and not explained else 0
        cooling = state.cleared_at is not None and score.collected_at < state.cleared_at + policy.cooldown
        if above < policy.consecutive or cooling:
            return state.model_copy(update={"above": above, "below": 0, **seen}), None
        raise_seq = state.raise_seq + 1
        alert_id = f"{_component_key(score)}:{raise_seq}:{score.collected_at:%Y%m%dT%H%M%SZ}"
        new = state.model_copy(
            update={
                "raised": True,
                "above": above,
                "below": 0,
                "raise_seq": raise_seq,
                "raised_alert_id": alert_id,
                **seen,
            }
        )
        return new, _alert(score, AlertState.RAISED, alert_id)

    below = state.below + 1 if policy.below_clear_level(score) else 0
    if below < policy.clear_consecutive:
        return state.model_copy(update={"above": 0, "below": below, **seen}), None
    alert_id = f"{state.raised_alert_id}:cleared"
    new = state.model_copy(
        update={
            "raised": False,
            "above": 0,
            "below": 0,
            "raised_alert_id": None,
            "cleared_at": score.collected_at,
            **seen,
        }
    )
    return new, _alert(score, AlertState.CLEARED, alert_id)

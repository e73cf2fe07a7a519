"""The alert policy as served: one definition for the worker that applies it and the page that draws it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetpulse.alerts.policy import AlertPolicy, Thresholds

if TYPE_CHECKING:
    from fleetpulse.models.registry import ScorerSet
    from fleetpulse.settings import ServerSettings


def serving_policy(settings: ServerSettings, scorers: ScorerSet | None = None) -> AlertPolicy:
    """The configured alert policy; components it leaves open take the champion's stored operating point.

    A trained model's calibrated probabilities live far below a rule's fixed levels (the disk
    model's 1 % false-alarm point is ~0.15), so one global threshold would silence it.
    Without ``scorers`` (the API, which draws the served thresholds but scores nothing) the
    champions' stored thresholds are read from the verified registry without loading a model
    (:func:`~fleetpulse.models.index.champion_thresholds`), so the API stays free of the numeric
    libraries and small.
    """
    if scorers is None:
        from fleetpulse.models.index import champion_thresholds

        suggested = champion_thresholds(settings.models)
    else:
        suggested = scorers.alert_thresholds(settings.models.alert_cap)
    return settings.alerts.policy.with_defaults(
        {c: Thresholds(raise_threshold=r, clear_threshold=x) for c, (r, x) in suggested.items()}
    )

"""Leave-one-drive-model-out evaluation: held-out drive models are never fitted on, only scored."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleetpulse.models import transfer
from fleetpulse.models.data import Instants
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.pipeline import RULE_NAME, Experiment
from fleetpulse.models.training import fit_calibrated

CUTOFF = date(2015, 1, 31)
EXPERIMENT = Experiment("synthetic", "daily", CUTOFF, (7,), "synthetic fleet")
MODELS = ("ST1000AA", "ST2000BB", "HGST H100", "WDC W200")


def fleet(drives_per_model: int = 160, seed: int = 0) -> Instants:
    """Daily instants over 60 days; a drive about to fail grows SMART 5 (scaled per drive model)."""
    rng = np.random.default_rng(seed)
    start = float(date(2015, 1, 1).toordinal())
    rows: list[np.ndarray] = []
    drive: list[int] = []
    day: list[float] = []
    serials: list[str] = []
    models: list[str] = []
    end: list[float] = []
    failed: list[bool] = []
    for m, name in enumerate(MODELS):
        for k in range(drives_per_model):
            index = len(serials)
            fails = rng.random() < 0.15
            last = start + rng.integers(20, 60) if fails else start + 59
            base = rng.poisson(0.3) * (m + 1)
            for d in np.arange(start, last + 1):
                row = np.full(len(DISK_FEATURES), np.nan)
                growth = max(0.0, 10 - (last - d)) * 5 * (m + 1) if fails else 0.0
                row[DISK_FEATURES.index("smart_5")] = base + growth
                row[DISK_FEATURES.index("smart_5_delta_30d")] = growth
                row[DISK_FEATURES.index("power_on_hours")] = 10_000 + 24 * (d - start)
                rows.append(row)
                drive.append(index)
                day.append(d)
            serials.append(f"{name}-{k}")
            models.append(name)
            end.append(last)
            failed.append(fails)
    return Instants(
        np.asarray(rows, dtype=np.float32),
        np.asarray(drive, dtype=np.int32),
        np.asarray(day),
        serials,
        models,
        np.asarray(end),
        np.asarray(failed),
    )


def test_vendors_group_hitachi_with_hgst() -> None:
    assert transfer.vendor("ST4000DM000") == "Seagate"
    assert transfer.vendor("Hitachi HDS722020ALA330") == transfer.vendor("HGST HMS5C4040ALE640") == "HGST/Hitachi"
    assert transfer.vendor("WDC WD30EFRX") == "WDC"


def test_held_out_drive_models_are_only_scored_and_folds_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instants = fleet()
    fitted_on: list[set[str]] = []
    model_names = np.asarray(instants.models)

    def recording_fit(data: Any, seed: int, **kwargs: Any) -> Any:
        # the fit's rows are identified by their drive-model group; the scored rows too
        groups = {int(g) for g in data.groups} | {int(g) for g in kwargs["also_score"][1]}
        fitted_on.append({str(m) for m in np.unique(model_names)[sorted(groups)]})
        return fit_calibrated(data, seed, **kwargs)

    monkeypatch.setattr(transfer, "fit_calibrated", recording_fit)
    result = transfer.run_transfer(instants, EXPERIMENT, seed=0, cache_dir=tmp_path, min_failed=5)
    held = [h.name for h in result.drive_models]
    assert held
    assert set(held) <= set(MODELS)
    for name, seen in zip(held, fitted_on, strict=False):
        assert name not in seen
    vendors = [h.name for h in result.vendors]
    assert "Seagate" in vendors
    seagate_fit = fitted_on[len(held) + vendors.index("Seagate")]
    assert not {m for m in seagate_fit if m.startswith("ST")}
    assert result.pooled is not None
    assert result.pooled.failed_drives == sum(h.failed_drives for h in result.drive_models)
    for h in [*result.drive_models, result.pooled]:
        assert set(h.drives) == {transfer.MODEL, RULE_NAME, transfer.SINGLE}
        assert set(h.differences) == {RULE_NAME, transfer.SINGLE}
        assert all(0.0 <= a["false_alarm_rate"] <= 1.0 for a in h.alerts.values())
    calls = len(fitted_on)
    again = transfer.run_transfer(instants, EXPERIMENT, seed=0, cache_dir=tmp_path, min_failed=5)
    assert len(fitted_on) == calls, "every fold came from the cache"
    assert [h.detection for h in again.drive_models] == [h.detection for h in result.drive_models]

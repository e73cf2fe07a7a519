"""``fleetpulse forecast``: the parts forecast from the ticket store, or its backtest on real data.

Heavy imports stay inside the command so ``fleetpulse --help`` stays fast.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from fleetpulse.cliutil import settings_from
from fleetpulse.compat import UTC

if TYPE_CHECKING:
    from fleetpulse.models.forecast_settings import ForecastSettings

DATA_DIR = Path("../shared/data")
CACHE_DIR = Path(".local/cache")
BACKTEST_OUT = Path("models/reports/forecast-backtest.md")


def register(app: typer.Typer) -> None:
    """Add ``forecast`` to ``fleetpulse``."""

    @app.command()
    def forecast(
        ctx: typer.Context,
        site: Annotated[str | None, typer.Option(help="only this site")] = None,
        component: Annotated[
            Literal["disk", "battery", "thermal", "memory"] | None, typer.Option(help="only this part")
        ] = None,
        model: Annotated[str | None, typer.Option(help="only this hardware model")] = None,
        output: Annotated[Literal["table", "json"], typer.Option("--format", help="table or JSON")] = "table",
        backtest: Annotated[
            bool, typer.Option(help="instead: backtest the disk forecast on the Backblaze table, write --out")
        ] = False,
        data_dir: Annotated[Path, typer.Option(help="folder with backblaze/ (--backtest)")] = DATA_DIR,
        cache_dir: Annotated[Path, typer.Option(help="replay cache (--backtest)")] = CACHE_DIR,
        out: Annotated[Path, typer.Option(help="report file (--backtest)")] = BACKTEST_OUT,
        sim_devices: Annotated[
            int, typer.Option(help="simulated devices for the battery and fan backtest (--backtest; 0 = skip)")
        ] = 1000,
        seed: Annotated[int, typer.Option(help="simulator seed (--backtest)")] = 0,
    ) -> None:
        """Expected part replacements per component, hardware model and site in the next 30 and 90 days."""
        settings = settings_from(ctx).alerts
        if backtest:
            _backtest(data_dir, cache_dir, out, settings.forecast, sim_devices, seed)
            return
        from fleetpulse.alerts.api.auth import Principal
        from fleetpulse.alerts.forecast import scoped_forecast
        from fleetpulse.alerts.settings import ALL_SITES
        from fleetpulse.alerts.store.repository import TicketStore
        from fleetpulse.contract.v1 import Component

        store = TicketStore.open(settings.store_url)
        try:
            operator = Principal(name="cli", role="admin", sites=frozenset({ALL_SITES}))
            part = Component(component) if component is not None else None
            rows = scoped_forecast(store, settings.forecast, operator, datetime.now(UTC), site, part, model)
        finally:
            store.close()
        if output == "json":
            typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
            return
        typer.echo(
            f"{'window':>6} {'part':<8} {'hardware model':<28} {'site':<20} {'parts':>7} {'expected':>9} "
            f"{'interval':>11} {'CO2e kg':>8}"
        )
        for r in rows:
            interval = f"{r.low}-{r.high}"
            typer.echo(
                f"{r.window_days:>5}d {r.component.value:<8} {r.hardware_model[:28]:<28} {r.site[:20]:<20} "
                f"{r.parts:>7} {r.expected:>9.1f} {interval:>11} {r.co2e_avoided_kg:>8.0f}"
            )
        if rows:
            typer.echo(f"interval: {100 * rows[0].coverage:g} % prediction interval of the count")


def _backtest(
    data_dir: Path, cache_dir: Path, out: Path, settings: ForecastSettings, sim_devices: int, seed: int
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fleetpulse.contract import Component
    from fleetpulse.models import forecast_backtest as fb
    from fleetpulse.models.data import SURVIVAL_FILE, cached_replay, file_digest
    from fleetpulse.models.index import read_registry
    from fleetpulse.models.registry import load_artifact
    from fleetpulse.models.settings import SHIPPED_REGISTRY

    path = data_dir / SURVIVAL_FILE
    if not path.is_file():
        typer.echo(f"error: {path} not found (pass --data-dir pointing at shared/data)", err=True)
        raise typer.Exit(2)
    registry = read_registry(SHIPPED_REGISTRY, None)
    champion = registry.champions[Component.DISK.value]
    scorer = load_artifact(registry, SHIPPED_REGISTRY, champion)
    windows = fb.windows_in_data()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("replaying test drives to each window start", total=644_569)
        probes = fb.cached_probes(data_dir, cache_dir, windows, fb.HISTORY_WINDOWS, lambda n: progress.advance(task, n))
        task = progress.add_task("replaying the survival table through the serving state", total=644_569)
        instants = cached_replay("survival", data_dir, cache_dir, lambda n: progress.advance(task, n))
    factor = fb.disk_odds_factor(instants)
    typer.echo(f"disk odds factor (training drives before the cut-off): {factor:.4f}", err=True)
    risk = scorer.predict(probes.features.astype(float), fb.WINDOW_DAYS)
    starts = fb.window_starts(windows, fb.HISTORY_WINDOWS)
    evidence = fb.window_counts(fb.window_outcomes(probes, risk, starts, settings.disk_odds_factor), starts)
    measured = fb.prior_from_history([c for c in evidence if c.end <= starts[fb.HISTORY_WINDOWS]])
    typer.echo(
        f"calibration prior (windows before the cut-off): spread shape {measured.spread_shape:.3f}, "
        f"dispersion {measured.dispersion:.4f}",
        err=True,
    )
    prior = settings.calibration
    h = fb.HISTORY_WINDOWS
    rows = fb.backtest(probes, risk, settings.coverage, starts, settings.disk_odds_factor, h, prior)
    base = fb.backtest(probes, risk, settings.coverage, starts, settings.disk_odds_factor, h)
    served = fb.backtest(probes, risk, settings.coverage, starts, history=h)
    sha = file_digest(path)
    report = fb.markdown(rows, base, served, settings.coverage, settings.disk_odds_factor, prior, champion, sha)
    if sim_devices > 0:
        from fleetpulse.models.forecast_simulated import simulated_backtest

        typer.echo(f"simulating {sim_devices} devices for the battery and fan backtest", err=True)
        sim = simulated_backtest(sim_devices, seed, settings=settings)
        report += "\n" + fb.simulated_markdown(
            sim.rows, sim.uncorrected, settings.coverage, sim.devices, sim.seed, sim.days
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    typer.echo(f"backtest written to {out}")

"""Command-line entry points of this component, registered on the ``fleetpulse`` app.

``fleetpulse train``     fit the disk model on the 2013-2016 Backblaze table, write a
                         versioned artifact and register it (champion by default).
``fleetpulse evaluate``  the whole evaluation report on real data (both Backblaze sets,
                         baselines, battery end of life on real and simulated histories).
``fleetpulse models``    check (``verify``) and upgrade/re-sign (``migrate``) the registry index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetpulse.cliutil import settings_from

if TYPE_CHECKING:
    from fleetpulse.models.data import Instants

DATA_DIR = Path("../shared/data")
CACHE_DIR = Path(".local/cache")
TRAINED_REGISTRY = Path(".local/models")
ROWS = {"daily": 868_524, "survival": 644_569}


def _replay(kind: str, data_dir: Path, cache_dir: Path) -> Instants:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fleetpulse.models.data import DAILY_FILE, SURVIVAL_FILE, cached_replay

    path = data_dir / (DAILY_FILE if kind == "daily" else SURVIVAL_FILE)
    if not path.is_file():
        typer.echo(f"error: {path} not found (pass --data-dir pointing at shared/data)", err=True)
        raise typer.Exit(2)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(f"replaying {kind} rows through the serving state", total=ROWS[kind])
        return cached_replay(kind, data_dir, cache_dir, lambda n: progress.advance(task, n))


def _step(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).log(message)


def _data_reference(data_dir: Path, kind: str) -> dict[str, str]:
    from fleetpulse.models.data import DAILY_FILE, SURVIVAL_FILE, file_digest

    path = data_dir / (DAILY_FILE if kind == "daily" else SURVIVAL_FILE)
    return {
        "file": str(path.name),
        "sha256": file_digest(path),
        "source": "Backblaze Drive Stats (see shared/data/backblaze/README.md)",
    }


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``fleetpulse``."""

    @app.command()
    def train(
        ctx: typer.Context,
        data_dir: Annotated[Path, typer.Option(help="folder with backblaze/ and battery/")] = DATA_DIR,
        out: Annotated[
            Path | None,
            typer.Option(help="registry folder (default: .local/models; with --ship the packaged registry)"),
        ] = None,
        seed: Annotated[int, typer.Option(help="random seed; same seed and data give the same model")] = 0,
        role: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
        cache_dir: Annotated[Path, typer.Option(help="replay cache")] = CACHE_DIR,
        ship: Annotated[
            bool, typer.Option(help="replace the registry packaged with fleetpulse by this champion (make train)")
        ] = False,
        fleet: Annotated[
            bool,
            typer.Option(
                help="train a challenger on the fleet's own feature log and labels (ticket store), stacked on the "
                "champion, and compare it with the champion on the last --holdout-days"
            ),
        ] = False,
        holdout_days: Annotated[int, typer.Option(min=14, max=365, help="--fleet: held-out labelled period")] = 90,
        labelled_through: Annotated[
            str | None,
            typer.Option(help="--fleet: last day labels are complete (YYYY-MM-DD; default: the log's last day)"),
        ] = None,
        report: Annotated[Path | None, typer.Option(help="--fleet: write the comparison here (Markdown)")] = None,
    ) -> None:
        """Train the disk failure model (7- and 30-day) and register it as a versioned artifact.

        With ``--fleet``: learn from this fleet's outcomes instead (see ``fleetpulse.models.fleet``)."""
        from fleetpulse.contract import ScorerRole
        from fleetpulse.models.index import ArtifactError, read_registry, signing_key
        from fleetpulse.models.pipeline import EXPERIMENTS, run_experiment
        from fleetpulse.models.publish import publish_disk_model, ship_disk_model
        from fleetpulse.models.registry import register_artifact
        from fleetpulse.models.settings import SHIPPED_REGISTRY

        if role not in ("champion", "challenger"):
            raise typer.BadParameter("role must be champion or challenger")
        if ship and role != "champion":
            raise typer.BadParameter("only a champion is shipped")
        key = signing_key(settings_from(ctx).models)
        if fleet:
            if ship or role != "champion":
                raise typer.BadParameter("--fleet registers a challenger: promote it with `fleetpulse models promote`")
            _train_fleet(ctx, out or TRAINED_REGISTRY, key, seed, holdout_days, labelled_through, report)
            return
        registry_dir = out or (SHIPPED_REGISTRY if ship else TRAINED_REGISTRY)
        if not ship:
            try:
                read_registry(registry_dir, key)  # refuse an index we could not extend before an hour of training
            except ArtifactError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
        instants = _replay("survival", data_dir, cache_dir)
        result = run_experiment(instants, EXPERIMENTS["survival"], seed, _step)
        data_ref = _data_reference(data_dir, "survival")
        if ship:
            directory = ship_disk_model(result, instants, registry_dir, seed, data_ref)
            typer.echo(f"artifact {directory} shipped as the packaged champion")
            return
        directory = publish_disk_model(result, instants, registry_dir, seed, data_ref)
        register_artifact(registry_dir, "disk", directory.name, ScorerRole(role), key=key)
        typer.echo(f"artifact {directory} registered as {role} (serve it: models.registry_dir = {registry_dir})")

    models_app = typer.Typer(help="The model registry: verify it, migrate or re-sign its index.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command()
    def verify(
        ctx: typer.Context,
        registry_dir: Annotated[Path | None, typer.Option(help="default: settings models.registry_dir")] = None,
    ) -> None:
        """Check the index (format, signature) and every registered artifact as the worker loads it; exit 1 on failure."""
        from fleetpulse.models.index import ArtifactError, signing_key
        from fleetpulse.models.registry import verify_registry

        settings = settings_from(ctx).models
        directory = registry_dir or settings.registry_dir
        try:
            verdicts = verify_registry(directory, signing_key(settings))
        except ArtifactError as exc:
            typer.echo(f"REFUSED {directory}: {exc}", err=True)
            raise typer.Exit(1) from None
        for verdict in verdicts:
            typer.echo(f"ok      {verdict.artifact_id}" if verdict.error is None else f"REFUSED {verdict.error}")
        if any(v.error is not None for v in verdicts):
            raise typer.Exit(1)
        typer.echo(f"{directory}: {len(verdicts)} artifact(s) verified")

    @models_app.command()
    def promote(
        ctx: typer.Context,
        artifact_id: Annotated[
            str, typer.Argument(help="a registered disk challenger (from `fleetpulse train --fleet`)")
        ],
        registry_dir: Annotated[Path | None, typer.Option(help="default: settings models.registry_dir")] = None,
        override: Annotated[
            bool, typer.Option(help="promote although the challenger does not win (needs --reason)")
        ] = False,
        reason: Annotated[
            str | None, typer.Option(help="why the gate is overridden (written to the audit trail)")
        ] = None,
    ) -> None:
        """Make a challenger the disk champion if it beat the champion on the held-out period (the gate),
        or with ``--override --reason``; audited in the ticket store. Workers pick it up without a restart."""
        import getpass

        from fleetpulse.alerts.store.audit import AuditActor, AuditKind
        from fleetpulse.alerts.store.repository import TicketStore
        from fleetpulse.models.fleet import PromotionRefused, make_champion, promotion_check
        from fleetpulse.models.index import ArtifactError, signing_key

        settings = settings_from(ctx)
        directory = registry_dir or settings.models.registry_dir
        key = signing_key(settings.models)
        note = (reason or "").strip()
        if override and not note:
            raise typer.BadParameter("--override needs --reason: the audit trail records why")
        if note and not override:
            raise typer.BadParameter("--reason is for --override")
        try:
            wins, evidence, digests = promotion_check(directory, artifact_id, key)
        except (PromotionRefused, ArtifactError) as exc:
            typer.echo(f"REFUSED: {exc}", err=True)
            raise typer.Exit(1) from None
        if not wins and not override:
            typer.echo(f"REFUSED: the challenger does not win: {evidence}", err=True)
            raise typer.Exit(1)
        kind = AuditKind.MODEL_PROMOTED if wins else AuditKind.MODEL_PROMOTED_OVERRIDE
        payload = {"artifact": artifact_id, "registry": str(directory), "gate": evidence, "wins": wins}
        if not wins:
            payload["reason"] = note[:1000]
        store = TicketStore.open(settings.alerts.store_url)
        try:
            store.audit.record(kind, AuditActor.local(getpass.getuser(), "operator"), source="cli", payload=payload)
        finally:
            store.close()
        try:
            previous = make_champion(directory, artifact_id, key, digests)
        except ArtifactError as exc:  # its files changed after the gate judged them
            typer.echo(f"REFUSED: {exc}", err=True)
            raise typer.Exit(1) from None
        verdict = "wins" if wins else "OVERRIDDEN"
        typer.echo(f"{artifact_id} is the disk champion ({verdict}: {evidence}); {previous} is now a challenger")

    @models_app.command()
    def migrate(
        ctx: typer.Context,
        registry_dir: Annotated[Path | None, typer.Option(help="default: settings models.registry_dir")] = None,
    ) -> None:
        """Rewrite the index with the digests of both files of each artifact, signed with models.signing_key.

        For an index of the old format the files are recorded AS THEY ARE NOW: check them first
        (below: each artifact's digests and stored alert thresholds). An index in the current
        format is re-signed only if every file still matches its recorded digest. An artifact
        written before artifacts recorded their predictions gets them recorded with this
        environment's libraries, once its trees are proven walkable: run it where the models
        score as they were trained to.
        """
        from fleetpulse.models.artifact import library_versions
        from fleetpulse.models.index import ArtifactError, artifact_dir, signing_key
        from fleetpulse.models.registry import migrate_registry

        settings = settings_from(ctx).models
        directory = registry_dir or settings.registry_dir
        key = signing_key(settings)
        try:
            registry, recorded = migrate_registry(directory, key)
        except ArtifactError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        here = library_versions()
        for artifact_id in recorded:
            typer.echo(
                f"{artifact_id}: predictions recorded with scikit-learn {here['scikit-learn']}, numpy {here['numpy']} "
                "(its metadata's `libraries` name those it was trained with)"
            )
        for artifact_id, digests in registry.artifacts.items():
            meta = json.loads((artifact_dir(directory, artifact_id) / "metadata.json").read_bytes())
            thresholds = {
                f"{horizon}d {cap}": point.get("threshold")
                for horizon, caps in (meta.get("operating_points") or {}).items()
                for cap, point in caps.items()
                if isinstance(point, dict)
            }
            typer.echo(f"{artifact_id}: {digests} alert thresholds {thresholds}")
        signed = "signed with models.signing_key" if key is not None else "unsigned (no models.signing_key)"
        typer.echo(f"{directory / 'registry.json'}: {len(registry.artifacts)} artifact(s) recorded, {signed}")

    def _train_fleet(
        ctx: typer.Context,
        registry_dir: Path,
        key: bytes | None,
        seed: int,
        holdout_days: int,
        labelled_through: str | None,
        report: Path | None,
    ) -> None:
        from datetime import date

        from fleetpulse.alerts.fleetlog import FleetLog
        from fleetpulse.alerts.store.repository import TicketStore
        from fleetpulse.contract import Component, ScorerRole
        from fleetpulse.models.fleet import (
            FleetRows,
            FleetTrainingError,
            adopt_champion,
            publish_fleet_model,
            report_markdown,
            train_fleet_challenger,
        )
        from fleetpulse.models.index import ArtifactError, artifact_dir, read_registry
        from fleetpulse.models.registry import load_artifact, register_artifact

        settings = settings_from(ctx)
        try:
            through = date.fromisoformat(labelled_through) if labelled_through else None
        except ValueError:
            raise typer.BadParameter("--labelled-through must be YYYY-MM-DD") from None
        store = TicketStore.open(settings.alerts.store_url)
        try:
            log = FleetLog(store)
            _step("reading the feature log and labels from the ticket store")
            rows = FleetRows.from_log(log.feature_rows(Component.DISK))
            outcomes = log.outcomes()
        finally:
            store.close()
        if not len(rows.day):
            typer.echo("error: the feature log holds no disk rows yet", err=True)
            raise typer.Exit(2)
        try:
            champion_id = adopt_champion(registry_dir, settings.models.registry_dir, key)
            champion = load_artifact(read_registry(registry_dir, key), registry_dir, champion_id)
            through = through or date.fromordinal(int(rows.day.max()))
            _step(
                f"fitting the challenger on {len(rows.day):,} disk-days, holding out {holdout_days} days to {through}"
            )
            experiment = train_fleet_challenger(
                champion, rows, outcomes, through, holdout_days, settings.models.alert_cap, seed
            )
            directory = publish_fleet_model(experiment, artifact_dir(registry_dir, champion_id), registry_dir, seed)
            register_artifact(registry_dir, "disk", directory.name, ScorerRole.CHALLENGER, key=key)
        except (FleetTrainingError, ArtifactError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        text = report_markdown(experiment.report)
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(text)
        typer.echo(text)
        typer.echo(
            f"challenger {directory.name} registered in {registry_dir}; `fleetpulse models promote {directory.name}`"
        )

    @app.command()
    def evaluate(
        data_dir: Annotated[Path, typer.Option(help="folder with backblaze/ and battery/")] = DATA_DIR,
        out: Annotated[Path, typer.Option(help="report folder")] = Path(".local/reports/latest"),
        seed: Annotated[int, typer.Option()] = 0,
        cache_dir: Annotated[Path, typer.Option(help="replay cache")] = CACHE_DIR,
        sim_devices: Annotated[int, typer.Option(help="simulated laptops for the battery check (0 = skip)")] = 2000,
    ) -> None:
        """Write the evaluation report (Markdown, PNG plots, metrics.json) on the real data."""
        from fleetpulse.alerts.policy import AlertPolicy
        from fleetpulse.models.anomaly_eval import evaluate_simulated_anomaly
        from fleetpulse.models.battery_eval import evaluate_real, evaluate_simulated
        from fleetpulse.models.pipeline import EXPERIMENTS, run_experiment
        from fleetpulse.models.report import write_report
        from fleetpulse.models.transfer import run_transfer

        results = []
        meta: dict[str, Any] = {"seed": seed, "data": {}}
        transfers = []
        for kind in ("daily", "survival"):
            instants = _replay(kind, data_dir, cache_dir)
            meta["data"][kind] = _data_reference(data_dir, kind)
            transfers.append(run_transfer(instants, EXPERIMENTS[kind], seed, cache_dir, _step))
            results.append(run_experiment(instants, EXPERIMENTS[kind], seed, _step))
        battery_dir = data_dir / "battery"
        if not battery_dir.is_dir():
            typer.echo(f"error: {battery_dir} not found", err=True)
            raise typer.Exit(2)
        _step("battery end of life on real histories")
        real = evaluate_real(battery_dir)
        simulated, note = None, "Simulated laptops: skipped (--sim-devices 0)."
        if sim_devices > 0:
            _step(f"battery end of life on {sim_devices} simulated laptops (540 days)")
            simulated = evaluate_simulated(sim_devices, seed)
            note = (
                f"Simulated laptops: fleetpulse.agents.simulator, {sim_devices} laptops, seed {seed}, 540 days, "
                "those whose battery crosses 60 % by capacity fade in the window; truth from the noisy readings "
                "(5-reading median)."
            )
        anomaly = None
        if sim_devices > 0:
            _step(f"device anomaly score on {sim_devices // 2} simulated PCs")
            anomaly = evaluate_simulated_anomaly(sim_devices // 2, seed, AlertPolicy().raise_threshold)
        path = write_report(out, results, transfers, real, simulated, note, anomaly, meta)
        typer.echo(f"report written to {path}")

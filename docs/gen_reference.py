"""Writes the reference pages from the code at build time (mkdocs-gen-files), so they cannot drift.

Pages: settings (every field of the server's and the agent's settings with type, default,
environment variable and description), the command lines, the wire contract (topics, record
fields and JSON Schemas), the Prometheus metrics and the Grafana dashboards panel by panel.
Documents kept beside the code they describe (deploy/production.md, the example evaluation
report) are copied in unchanged.
"""

from __future__ import annotations

import enum
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import mkdocs_gen_files
import typer.main
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]


# --- settings -------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(repr(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section below)"
    if isinstance(value, enum.Enum):
        value = value.value
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sub_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_sub_models(arg))
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _settings_tables(model: type[BaseModel], dotted: str, env: str, seen: set[type[BaseModel]]) -> Iterator[str]:
    rows: list[str] = []
    nested: list[tuple[str, str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        subs = [m for m in _sub_models(field.annotation) if m not in seen]
        description = field.description or ""
        if not description and subs and subs[0].__doc__:
            description = inspect.cleandoc(subs[0].__doc__).split("\n\n")[0]
        variable = f"`{env}{name.upper()}`" if env else "(in the list's JSON)"
        rows.append(
            f"| `{name}` | `{_cell(_type_name(field.annotation))}` | `{_cell(_default(field))}` "
            f"| {variable} | {_cell(description)} |"
        )
        in_list = typing.get_origin(field.annotation) is list or "list[" in _type_name(field.annotation)
        for sub in subs:
            path = f"{dotted}.{name}" if dotted else name
            nested.append(
                (f"[{path}]]" if in_list else path, "" if in_list or not env else f"{env}{name.upper()}__", sub)
            )
    title = f"`[{dotted}]`" if dotted else "top level"
    doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
    yield f"\n### {title} — {model.__name__}\n\n{doc}\n"
    yield "| key | type | default | environment | description |\n|---|---|---|---|---|"
    yield from rows
    for path, prefix, sub in nested:
        if sub in seen:
            continue
        seen.add(sub)
        yield from _settings_tables(sub, path, prefix, seen)


def settings_page() -> str:
    from fleetpulse.agents.settings import ENV_PREFIX, AgentSettings
    from fleetpulse.settings import ServerSettings

    lines = [
        "# Settings",
        "",
        "Generated from the settings classes. Each deployable reads one TOML file, then environment",
        "variables (nested keys joined with `__`). Values of list and table fields given in the",
        "environment are JSON. Secret fields are never printed: `config show` masks them.",
        "",
        "## Server (`fleetpulse`, `--config server.toml` or `$FLEETPULSE_CONFIG`)",
    ]
    lines += list(_settings_tables(ServerSettings, "", "FLEETPULSE_", {ServerSettings}))
    lines += ["", "## Endpoint agent (`fleetpulse-agent`, `--config agent.toml` or `$FLEETPULSE_AGENT_CONFIG`)"]
    lines += list(_settings_tables(AgentSettings, "", ENV_PREFIX.upper(), {AgentSettings}))
    return "\n".join(lines) + "\n"


# --- command lines --------------------------------------------------------------------------


def _command_sections(command: Any, path: str, level: int) -> Iterator[str]:
    """One section per command, recursing into groups (typer's own click objects, duck-typed)."""
    heading = "#" * min(level, 6)
    yield f"\n{heading} `{path}`\n"
    if command.help:
        yield inspect.cleandoc(command.help).split("\n\n")[0] + "\n"
    params = [
        p
        for p in command.params
        if not getattr(p, "hidden", False) and p.name not in ("install_completion", "show_completion")
    ]
    if params:
        yield "| argument / option | help | default |\n|---|---|---|"
        for param in params:
            help_text = getattr(param, "help", "") or ""
            if param.param_type_name == "option":
                names = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
                default = "" if param.default in (None, False, ()) or param.required else f"`{param.default}`"
            else:
                names = f"`{param.name.upper()}`"
                default = ""
            yield f"| {names} | {_cell(help_text)} | {_cell(default)} |"
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            if not getattr(sub, "hidden", False):
                yield from _command_sections(sub, f"{path} {name}", level + 1)


def cli_page() -> str:
    from fleetpulse.agents.commands import app as agent_app
    from fleetpulse.cli import app

    lines = ["# Command line", "", "Generated from the commands' own help. `--help` on any command prints the same."]
    lines += list(_command_sections(typer.main.get_command(app), "fleetpulse", 2))
    lines += list(_command_sections(typer.main.get_command(agent_app), "fleetpulse-agent", 2))
    return "\n".join(lines) + "\n"


# --- wire contract --------------------------------------------------------------------------


def contract_page() -> str:
    from fleetpulse import contract
    from fleetpulse.contract import SCHEMA_VERSION, Topics

    topics = Topics()
    lines = [
        "# Wire contract",
        "",
        f"Schema version **{SCHEMA_VERSION}**. Every record on Kafka is one of the pydantic models below,",
        "JSON-encoded, keyed by device id where it concerns a device. Agents and server import the same",
        "models (`fleetpulse.contract`); a breaking change is a new version and new topic names.",
        "Each record's JSON Schema (as validated, from `model_json_schema()`) is under its field table,",
        "for producers and consumers written without the Python models.",
        "",
        "## Topics",
        "",
        "| topic | what |",
        "|---|---|",
    ]
    for name in dir(Topics):
        attribute = getattr(Topics, name)
        if isinstance(attribute, property):
            doc = inspect.cleandoc(attribute.__doc__ or "")
            lines.append(f"| `{getattr(topics, name)}` | {_cell(doc)} |")
    lines += ["", "## Records"]
    for name in contract.__all__:
        obj = getattr(contract, name)
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            doc = inspect.cleandoc(obj.__doc__ or "")
            lines += [f"\n### {name}\n", doc, "", "| field | type | description |", "|---|---|---|"]
            for field_name, field in obj.model_fields.items():
                lines.append(
                    f"| `{field_name}` | `{_cell(_type_name(field.annotation))}` | {_cell(field.description or '')} |"
                )
            schema = json.dumps(obj.model_json_schema(), indent=2, sort_keys=True, ensure_ascii=False)
            lines += ["", f'??? note "JSON Schema of {name}"', "", "    ```json"]
            lines += [f"    {line}" for line in schema.splitlines()]
            lines.append("    ```")
    return "\n".join(lines) + "\n"


# --- metrics --------------------------------------------------------------------------------


def _metric_row(name: str, kind: str, labels: Iterable[str], documentation: str) -> str:
    label_cells = ", ".join(f"`{label}`" for label in labels)
    return f"| `{name}` | {kind} | {label_cells} | {_cell(documentation)} |"


def metrics_page() -> str:
    from fleetpulse.alerts.consumer import ConsumerStats
    from fleetpulse.alerts.metrics import ConsumerCollector, StoreCollector
    from fleetpulse.alerts.settings import ConsumerSettings
    from fleetpulse.streams.metrics import PipelineMetrics, SinkCollector, StateCacheCollector
    from fleetpulse.streams.settings import StreamSettings
    from fleetpulse.streams.sinks import NullSink
    from fleetpulse.streams.state_cache import DecodedCache

    streams, consumer = StreamSettings(), ConsumerSettings()
    table = ["| metric | type | labels | help |", "|---|---|---|---|"]
    lines = [
        "# Metrics",
        "",
        "Generated from the metric definitions. Two processes serve Prometheus metrics (text format",
        "at `/metrics`); scrape every replica of both. Counters are exposed with the suffix `_total`,",
        "histograms as `_bucket`, `_sum` and `_count`.",
        "",
        "## Stream worker (`fleetpulse worker`)",
        "",
        "Served at `http://<[streams] web_host>:<[streams] web_port>/metrics` (default",
        f"`{streams.web_host}:{streams.web_port}`); `/health` answers 503 when commits stall.",
        "Each worker counts only the partitions it owns: sum over the workers for the fleet.",
        "",
        *table,
    ]
    for metric in vars(PipelineMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            (family,) = metric.describe()
            lines.append(_metric_row(family.name, family.type, metric._labelnames, family.documentation))
    for collector in (SinkCollector(NullSink()), StateCacheCollector(DecodedCache(0))):
        for family in collector.collect():
            lines.append(
                _metric_row(family.name, family.type, getattr(family, "_labelnames", ()), family.documentation)
            )
    lines += [
        "",
        "## Ticket consumer (`fleetpulse tickets consume`)",
        "",
        "Served at `http://<[alerts.consumer] metrics_host>:<[alerts.consumer] metrics_port>/metrics`",
        f"when `metrics_port` is set (default: not served; host `{consumer.metrics_host}`). The gauges are",
        "read from the ticket store at each scrape, so every consumer replica reports the same values:",
        "aggregate with `max`, not `sum`. The counters are each replica's own: aggregate with `sum`.",
        "A device counts as silent when its last daily inventory is",
        "older than `[alerts.consumer] silent_after` (default",
        f"{consumer.silent_after.total_seconds() / 3600:g} h).",
        "",
        *table,
    ]
    empty_store = types.SimpleNamespace(outbox_backlog=list, site_coverage=lambda since: [])
    collector = StoreCollector(empty_store, consumer.silent_after)  # type: ignore[arg-type]
    for family in [*collector.collect(), *ConsumerCollector(ConsumerStats()).collect()]:
        labels = getattr(family, "_labelnames", ())
        lines.append(_metric_row(family.name, family.type, labels, family.documentation))
    return "\n".join(lines) + "\n"


# --- dashboards -----------------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels in layout order, rows included; a collapsed row carries its panels inside it."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_sections(dashboard: dict[str, Any]) -> Iterator[str]:
    title = dashboard["title"].removeprefix("fleetpulse · ")
    yield f"\n## {title}\n"
    yield f"UID `{dashboard['uid']}`, refreshes every {dashboard['refresh']}.\n"
    yield inspect.cleandoc(dashboard.get("description", "")).replace("``", "`") + "\n"
    variables = dashboard.get("templating", {}).get("list", [])
    if variables:
        yield "| variable | label | values from |\n|---|---|---|"
        for variable in variables:
            yield f"| `${variable['name']}` | {_cell(variable.get('label', ''))} | `{_cell(variable.get('query', ''))}` |"
    for panel in _panels(dashboard.get("panels", [])):
        if panel["type"] == "row":
            yield f"\n### {panel['title']}\n"
            continue
        window = f" Always the last {panel['timeFrom']}." if panel.get("timeFrom") else ""
        description = " ".join(panel.get("description", "").split())
        yield f"**{panel['title']}** ({panel['type']}) — {description}{window}\n"
        targets = panel.get("targets", [])
        if targets:
            yield '??? abstract "InfluxQL"\n'
            for target in targets:
                if target.get("alias"):
                    yield f"    Series named `{target['alias']}`:\n"
                yield f"    ```sql\n    {target['query']}\n    ```\n"


def dashboards_page() -> str:
    from fleetpulse.dashboards.build import build_all

    lines = [
        "# Dashboards",
        "",
        "Generated from the dashboards' code (`dashboards/`, `build_all()`): every panel with what it",
        "shows and the InfluxQL it runs against the InfluxDB data source. Variables narrow the",
        "queries; `$timeFilter` is the dashboard's time range unless the panel always shows a fixed",
        "last period.",
    ]
    for dashboard in build_all().values():
        lines += list(_dashboard_sections(dashboard))
    return "\n".join(lines) + "\n"


# --- documents kept beside the code ---------------------------------------------------------


def _relink(text: str, source_dir: str) -> str:
    """A copied document's links to repository files become the files' repository paths.

    The site holds only documentation; the files stay in the repository, where readers of the
    site find them by path.
    """

    def fix(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:|#", target) or target.endswith(".png"):
            return match.group(0)
        path = os.path.normpath(Path(source_dir) / target)
        return label if f"`{path}`" == label else f"{label} (`{path}`)"

    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", fix, text)


def copy_documents() -> None:
    production = (REPO / "deploy" / "production.md").read_text(encoding="utf-8")
    with mkdocs_gen_files.open("operations/production.md", "w") as out:
        out.write(_relink(production, "deploy"))
    example = REPO / "models" / "reports" / "example"
    report = example / "report.md"
    if report.is_file():
        with mkdocs_gen_files.open("models/report.md", "w") as out:
            out.write(_relink(report.read_text(encoding="utf-8"), "models/reports/example"))
        for image in sorted(example.glob("*.png")):
            with mkdocs_gen_files.open(f"models/{image.name}", "wb") as out:
                out.write(image.read_bytes())
    backtest = REPO / "models" / "reports" / "forecast-backtest.md"
    if backtest.is_file():
        with mkdocs_gen_files.open("models/forecast-backtest.md", "w") as out:
            out.write(_relink(backtest.read_text(encoding="utf-8"), "models/reports"))


for page, render in {
    "reference/settings.md": settings_page,
    "reference/cli.md": cli_page,
    "reference/contract.md": contract_page,
    "reference/metrics.md": metrics_page,
    "reference/dashboards.md": dashboards_page,
}.items():
    with mkdocs_gen_files.open(page, "w") as fh:
        fh.write(render())
copy_documents()

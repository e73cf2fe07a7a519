"""The endpoint agent stays light: its import graph has no server-side heavyweights."""

from __future__ import annotations

import sys

from tests.harness import modules_loaded_by

FORBIDDEN = ("faust", "mode", "sklearn", "numpy", "pandas", "scipy", "aiokafka", "fastapi", "sqlalchemy")


def test_agent_import_graph_has_no_heavy_dependencies() -> None:
    code = (
        "import importlib, pkgutil\n"
        "import fleetpulse.agents, fleetpulse.agents.cli, fleetpulse.contract\n"
        "for m in pkgutil.walk_packages(fleetpulse.agents.__path__, 'fleetpulse.agents.'):\n"
        "    if m.name.split('.')[-1] not in ('server_cli', 'simulator', 'mdm'):\n"
        "        importlib.import_module(m.name)\n"
    )
    loaded = modules_loaded_by(code)
    heavy = sorted({name for name in loaded for bad in FORBIDDEN if name == bad or name.startswith(bad + ".")})
    assert heavy == [], f"agent imports heavy modules: {heavy}"


# What the endpoint agent's runtime may load besides the standard library: the five base
# dependencies and their own dependencies (pydantic-settings -> dotenv, typer -> click/shellingham, ...).
AGENT_THIRD_PARTY = {
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "dotenv",
    "typer",
    "click",
    "shellingham",
    "annotated_doc",
    "rich",
    "markdown_it",
    "mdurl",
    "pygments",
    "psutil",
    "kafka",
    "certifi",
    "fleetpulse",
    "tomli",  # tomllib's backport, a dependency on Python 3.10 only
}


def test_agent_runtime_loads_only_stdlib_and_its_five_dependencies() -> None:
    code = (
        "import importlib, pkgutil\n"
        "import fleetpulse.agents.collectors, fleetpulse.agents.parsers\n"
        "mods = ['fleetpulse.agents.cli', 'fleetpulse.agents.runner', 'fleetpulse.agents.delivery',\n"
        "        'fleetpulse.agents.spool', 'fleetpulse.agents.identity', 'fleetpulse.agents.inventory']\n"
        "for pkg in (fleetpulse.agents.collectors, fleetpulse.agents.parsers):\n"
        "    mods += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
    )
    loaded = {name.split(".")[0] for name in modules_loaded_by(code)}
    extra = sorted(n for n in loaded - AGENT_THIRD_PARTY if n not in sys.stdlib_module_names and not n.startswith("_"))
    assert extra == [], f"agent runtime imports packages outside its declared dependencies: {extra}"

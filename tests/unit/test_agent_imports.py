"""The endpoint agent stays light: its import graph has no server-side heavyweights."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("faust", "mode", "sklearn", "numpy", "pandas", "scipy", "aiokafka", "fastapi", "sqlalchemy")


def test_agent_import_graph_has_no_heavy_dependencies() -> None:
    code = (
        "import sys, json, importlib, pkgutil\n"
        "import fleetpulse.agents, fleetpulse.agents.cli, fleetpulse.contract\n"
        "for m in pkgutil.walk_packages(fleetpulse.agents.__path__, 'fleetpulse.agents.'):\n"
        "    if m.name.split('.')[-1] not in ('server_cli', 'simulator', 'mdm'):\n"
        "        importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    heavy = sorted({name for name in loaded for bad in FORBIDDEN if name == bad or name.startswith(bad + ".")})
    assert heavy == [], f"agent imports heavy modules: {heavy}"

"""pyproject declares exactly what the product imports: nothing missing, nothing unused.

An undeclared import works only while some other package happens to pull it in; an unused
declaration is weight on every install. Distributions the code loads by name rather than by
import (drivers, plug-ins) are listed with the reason.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

from fleetpulse.compat import tomllib

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("fleetpulse", "agents", "streams", "models", "alerts", "dashboards")

# Loaded by name, never imported by the product's own code.
LOADED_BY_NAME = {
    "rocksdict": "faust's table store, chosen by the store URL rocksdict://",
    "psycopg": "SQLAlchemy's PostgreSQL driver, chosen by the URL postgresql+psycopg://",
    "python-multipart": "FastAPI's form parser, which it imports when a route takes form fields (the login form)",
}


# Standard library from 3.11 on, imported behind a version check (fleetpulse/compat.py).
NEWER_STDLIB = {"tomllib"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normalise(match.group(0))


def _requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["server"]]


def _declared() -> set[str]:
    return {_requirement_name(r) for r in _requirements() if not r.startswith("fleetpulse")}


def _not_for_this_python() -> set[str]:
    """Declared with a marker this interpreter does not meet: tomli (tomllib's backport) on 3.11+,
    grafana-foundation-sdk (the dashboards' code, published for 3.11+) on 3.10."""
    return {_requirement_name(r) for r in _requirements() if (m := Requirement(r).marker) and not m.evaluate()}


def _imported_top_level_modules() -> dict[str, str]:
    """Third-party top-level module -> one file importing it."""
    found: dict[str, str] = {}
    for component in COMPONENTS:
        for path in sorted((REPO / component).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names | NEWER_STDLIB and top not in COMPONENTS:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _packages_distributions() -> dict[str, list[str]]:
    """Top-level module -> distributions, as 3.11's ``packages_distributions``: from ``top_level.txt`` or,
    where a distribution has none (most wheels), its files; 3.10's reads ``top_level.txt`` only."""
    if sys.version_info >= (3, 11):
        return importlib.metadata.packages_distributions()
    found: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        declared = (dist.read_text("top_level.txt") or "").split()
        inferred = {
            file.parts[0] if len(file.parts) > 1 else inspect.getmodulename(file.name) for file in dist.files or ()
        }
        for module in declared or sorted(m for m in inferred if m and "." not in m):
            found.setdefault(module, []).append(dist.metadata["Name"])
    return found


def test_every_import_is_declared_and_every_declaration_imported() -> None:
    distributions = _packages_distributions()
    imported: dict[str, str] = {}
    declared, not_here = _declared(), _not_for_this_python()
    for module, where in _imported_top_level_modules().items():
        owners = distributions.get(module)
        if owners is None and _normalise(module) in not_here:
            imported[_normalise(module)] = where  # not installed on this interpreter
            continue
        assert owners, f"{module} (imported in {where}) belongs to no installed distribution"
        imported[_normalise(owners[0])] = where
    undeclared = {name: where for name, where in imported.items() if name not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = declared - set(imported) - set(LOADED_BY_NAME)
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"

"""Every InfluxQL query in a set of dashboards, and Grafana's macro expansion for running them outside Grafana.

The panel-query tests and the query benchmark execute the dashboards' queries
directly against InfluxDB; this expands ``$timeFilter``, ``$__interval`` and
template variables the way Grafana's InfluxDB data source does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


class DashboardQuery(NamedTuple):
    dashboard: str
    where: str
    query: str
    time_from: str | None = None
    """The panel's relative time override (e.g. ``24h``), replacing the dashboard range's start."""

    def time_range(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        """The range Grafana queries this panel with when the dashboard shows ``start..end``."""
        if self.time_from is None:
            return start, end
        match = re.fullmatch(r"(\d+)([mhd])", self.time_from)
        if match is None:
            raise ValueError(f"unsupported panel time override {self.time_from!r}")
        return end - int(match.group(1)) * _UNITS[match.group(2)], end


def dashboard_queries(dashboards: Mapping[str, Mapping[str, Any]]) -> list[DashboardQuery]:
    """Panel targets, query variables and annotations, in dashboard order."""
    found = []
    for name, dashboard in dashboards.items():
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                where = f"panel {panel['title']!r} {target['refId']}"
                found.append(DashboardQuery(name, where, target["query"], panel.get("timeFrom")))
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                found.append(DashboardQuery(name, f"variable {var['name']}", var["query"]))
        for anno in dashboard.get("annotations", {}).get("list", []):
            found.append(DashboardQuery(name, f"annotation {anno['name']}", anno["query"]))
    return found


def fill_macros(query: str, start: datetime, end: datetime, interval: str, variables: Mapping[str, str]) -> str:
    """Expand Grafana macros; an unknown ``$variable`` is an error, never left in the query."""
    values = {
        "timeFilter": f"time >= {int(start.timestamp() * 1000)}ms and time <= {int(end.timestamp() * 1000)}ms",
        "__interval": interval,
        **variables,
    }

    def repl(match: re.Match[str]) -> str:
        key = match.group(1) or match.group(2)
        if key not in values:
            raise KeyError(f"no value for Grafana variable ${key} in: {query}")
        return values[key]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, query)

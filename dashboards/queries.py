"""Every InfluxQL query in a set of dashboards, and Grafana's macro expansion for running them outside Grafana.

The panel-query tests and the query benchmark execute the dashboards' queries
directly against InfluxDB; this expands ``$timeFilter``, ``$__interval`` and
template variables the way Grafana's InfluxDB data source does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple


class DashboardQuery(NamedTuple):
    dashboard: str
    where: str
    query: str


def dashboard_queries(dashboards: Mapping[str, Mapping[str, Any]]) -> list[DashboardQuery]:
    """Panel targets, query variables and annotations, in dashboard order."""
    found = []
    for name, dashboard in dashboards.items():
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                found.append(DashboardQuery(name, f"panel {panel['title']!r} {target['refId']}", target["query"]))
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

"""Provision Grafana through its HTTP API: data source, folder, dashboards.

Idempotent by construction: everything is addressed by a fixed UID, the data
source and folder are looked up before being created, and dashboards are saved
with ``overwrite`` so pushing twice leaves the same state (Grafana keeps the
previous versions in the dashboard history).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError

from fleetpulse.dashboards.settings import GrafanaSettings

log = logging.getLogger(__name__)
Action = Literal["created", "updated", "unchanged"]


@dataclass
class PushReport:
    datasource: Action = "unchanged"
    folder: Action = "unchanged"
    dashboards: dict[str, str] = field(default_factory=dict)
    """dashboard UID -> URL path Grafana returned."""


def connect(settings: GrafanaSettings) -> GrafanaApi:
    url = urlparse(settings.url)
    auth: str | tuple[str, str] | None = None
    if settings.token is not None:
        auth = settings.token.get_secret_value()
    elif settings.username is not None:
        auth = (settings.username, settings.password.get_secret_value() if settings.password else "")
    return GrafanaApi(
        auth,
        host=url.hostname or "localhost",
        port=url.port,
        url_path_prefix=url.path.strip("/"),
        protocol=url.scheme or "http",
        verify=settings.verify_tls,
        timeout=settings.timeout_s,
        organization_id=settings.org_id,
    )


def datasource_payload(settings: GrafanaSettings) -> dict[str, Any]:
    """An InfluxQL data source; 2.x/3.x authenticate with a token header, 1.x with basic auth."""
    influx = settings.influx
    json_data: dict[str, Any] = {
        "version": "InfluxQL",
        "dbName": influx.database,
        "httpMode": influx.http_method,
        "tlsSkipVerify": influx.tls_skip_verify,
    }
    secure: dict[str, str] = {}
    payload: dict[str, Any] = {
        "uid": settings.datasource_uid,
        "name": settings.datasource_name,
        "type": "influxdb",
        "access": "proxy",
        "url": influx.url,
        "database": influx.database,
        "isDefault": False,
        "basicAuth": False,
        "jsonData": json_data,
    }
    if influx.token is not None:
        json_data["httpHeaderName1"] = "Authorization"
        secure["httpHeaderValue1"] = f"Token {influx.token.get_secret_value()}"
    elif influx.username is not None:
        payload.update(basicAuth=True, basicAuthUser=influx.username)
        secure["basicAuthPassword"] = influx.password.get_secret_value() if influx.password else ""
    if secure:
        payload["secureJsonData"] = secure
    return payload


def _missing(exc: GrafanaClientError) -> bool:
    return getattr(exc, "status_code", None) == 404


def ensure_datasource(api: GrafanaApi, settings: GrafanaSettings) -> Action:
    payload = datasource_payload(settings)
    datasources: Any = api.datasource  # grafana-client is untyped
    try:
        datasources.get_datasource_by_uid(settings.datasource_uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        datasources.create_datasource(payload)
        return "created"
    # Always written: the only way to rotate the InfluxDB token stored (encrypted) in Grafana.
    datasources.update_datasource_by_uid(settings.datasource_uid, payload)
    return "updated"


def ensure_folder(api: GrafanaApi, settings: GrafanaSettings) -> Action:
    folders: Any = api.folder
    try:
        folder = folders.get_folder(settings.folder_uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        folders.create_folder(settings.folder_title, uid=settings.folder_uid)
        return "created"
    if folder.get("title") != settings.folder_title:
        folders.update_folder(settings.folder_uid, title=settings.folder_title, overwrite=True)
        return "updated"
    return "unchanged"


def push(settings: GrafanaSettings, dashboards: dict[str, dict[str, Any]], api: GrafanaApi | None = None) -> PushReport:
    """Create or update the data source and folder, then save every dashboard into the folder."""
    api = api or connect(settings)
    report = PushReport(datasource=ensure_datasource(api, settings), folder=ensure_folder(api, settings))
    saver: Any = api.dashboard
    for dashboard in dashboards.values():
        body = {
            "dashboard": {**dashboard, "id": None},
            "folderUid": settings.folder_uid,
            "overwrite": True,
            "message": "fleetpulse dashboards push",
        }
        saved = saver.update_dashboard(body)
        report.dashboards[dashboard["uid"]] = str(saved.get("url", ""))
        log.info("dashboard saved", extra={"uid": dashboard["uid"], "version": saved.get("version")})
    return report

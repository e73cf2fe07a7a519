"""Connectors that speak HTTP: generic webhook, ServiceNow Table API, TOPdesk incidents API."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
from typing import Any

import httpx

from fleetpulse.alerts.connectors.base import DeliveryError, Notification
from fleetpulse.alerts.connectors.config import ServiceNowConfig, TopdeskConfig, WebhookConfig

USER_AGENT = "fleetpulse-alerts/1"
log = logging.getLogger(__name__)


def _post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    auth: httpx.BasicAuth | None,
    method: str = "POST",
) -> Any:
    """POST (or PATCH) and return the parsed JSON (or None); every failure becomes a DeliveryError."""
    try:
        response = httpx.request(
            method,
            url,
            content=body,
            headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
            | headers,
            timeout=timeout,
            auth=auth,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:300]}")
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _lookup(url: str, params: dict[str, str], timeout: float, auth: httpx.BasicAuth) -> Any:
    """GET for an incident created by an earlier attempt whose answer was lost (timeout after the POST).

    Unreachable -> DeliveryError (the POST would fail too); refused (e.g. no read right) -> None,
    and the caller creates the incident anyway.
    """
    try:
        response = httpx.get(
            url,
            params=params,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
            auth=auth,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200 or not response.content:
        if response.status_code not in (200, 204):
            log.warning("ITSM lookup refused; creating without it", extra={"fields": {"status": response.status_code}})
        return None
    try:
        return response.json()
    except ValueError:
        return None


class Webhook:
    """POSTs the whole notification as JSON; receivers verify ``X-Fleetpulse-Signature``."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> str | None:
        body = notification.model_dump_json().encode()
        headers = {"X-Fleetpulse-Delivery": notification.dedup_key}
        if self.config.secret is not None:
            digest = hmac.new(self.config.secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
            headers["X-Fleetpulse-Signature"] = f"sha256={digest}"
        _post(self.config.url, body, headers, self.config.timeout_s, None)
        return notification.dedup_key


_SN_URGENCY = {"critical": "1", "high": "1", "medium": "2", "low": "3"}
_SN_IMPACT = {"critical": "2", "high": "2", "medium": "3", "low": "3"}


class ServiceNow:
    """Creates an incident (or a problem-like incident for storms) via the Table API; lifecycle
    updates become work notes on it.

    Idempotent across retries: an incident with our ``correlation_id`` is looked up first.
    """

    def __init__(self, config: ServiceNowConfig) -> None:
        self.config = config
        self.name = config.name

    def _find(self, url: str, key: str, auth: httpx.BasicAuth) -> dict[str, Any] | None:
        found = _lookup(
            url,
            {"sysparm_query": f"correlation_id={key}", "sysparm_fields": "number,sys_id", "sysparm_limit": "1"},
            self.config.timeout_s,
            auth,
        )
        existing = found.get("result") if isinstance(found, dict) else None
        if isinstance(existing, list) and existing and isinstance(existing[0], dict):
            return existing[0]
        return None

    def deliver(self, notification: Notification) -> str | None:
        url = f"{self.config.instance_url.rstrip('/')}/api/now/table/{self.config.table}"
        auth = httpx.BasicAuth(self.config.username, self.config.password.get_secret_value())
        existing = self._find(url, notification.dedup_key, auth)
        if notification.subject == "update":
            # lifecycle news goes to the work notes; closing the incident stays IT-support's decision
            if existing is None or not existing.get("sys_id"):
                raise DeliveryError(f"incident {notification.dedup_key} not found (not created yet?)")
            body = json.dumps({"work_notes": f"{notification.title}\n{notification.body}"}).encode()
            _post(f"{url}/{existing['sys_id']}", body, {}, self.config.timeout_s, auth, method="PATCH")
            return str(existing.get("number") or existing["sys_id"])
        if existing is not None:
            return str(existing.get("number") or existing.get("sys_id") or "") or None
        record: dict[str, Any] = {
            "short_description": notification.title[:160],
            "description": notification.body,
            "urgency": _SN_URGENCY[notification.urgency],
            "impact": "1" if notification.subject == "storm" else _SN_IMPACT[notification.urgency],
            "category": "hardware",
            "correlation_id": notification.dedup_key,
            "correlation_display": "fleetpulse",
        }
        if self.config.assignment_group:
            record["assignment_group"] = self.config.assignment_group
        answer = _post(url, json.dumps(record).encode(), {}, self.config.timeout_s, auth)
        result = answer.get("result", {}) if isinstance(answer, dict) else {}
        return str(result.get("number") or result.get("sys_id") or "") or None


_TOPDESK_PRIORITY = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4"}


class Topdesk:
    """Creates a TOPdesk incident; lifecycle updates become (caller-invisible) actions on it.

    The dedup key goes to ``externalNumber``, looked up first, so a retry after a lost answer
    does not create a second incident.
    """

    def __init__(self, config: TopdeskConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> str | None:
        url = f"{self.config.url.rstrip('/')}/tas/api/incidents"
        auth = httpx.BasicAuth(self.config.username, self.config.app_password.get_secret_value())
        external = notification.dedup_key[:60]
        found = _lookup(
            url,
            {"query": f"externalNumber=={external}", "fields": "id,number", "page_size": "1"},
            self.config.timeout_s,
            auth,
        )
        existing = found[0] if isinstance(found, list) and found and isinstance(found[0], dict) else None
        if notification.subject == "update":
            # lifecycle news becomes an action entry; closing the incident stays IT-support's decision
            if existing is None or not existing.get("id"):
                raise DeliveryError(f"incident {external} not found (not created yet?)")
            text = html.escape(f"{notification.title}\n{notification.body}").replace("\n", "<br>")
            body = json.dumps({"action": text, "actionInvisibleForCaller": True}).encode()
            _post(f"{url}/id/{existing['id']}", body, {}, self.config.timeout_s, auth, method="PATCH")
            return str(existing.get("number") or existing["id"])
        if existing is not None:
            return str(existing.get("number") or existing.get("id") or "") or None
        record: dict[str, Any] = {
            "caller": {"dynamicName": self.config.caller_name},
            "briefDescription": notification.title[:80],
            "request": notification.body,
            "externalNumber": external,
            "priority": {"name": _TOPDESK_PRIORITY[notification.urgency]},
        }
        if self.config.category:
            record["category"] = {"name": self.config.category}
        answer = _post(url, json.dumps(record).encode(), {}, self.config.timeout_s, auth)
        if isinstance(answer, dict):
            return str(answer.get("number") or answer.get("id") or "") or None
        return None

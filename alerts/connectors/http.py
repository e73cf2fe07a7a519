"""Connectors that speak HTTP: generic webhook, ServiceNow Table API, TOPdesk incidents API.

Every error text is scrubbed of the connector's credentials before it leaves this module:
it is stored in the outbox, logged and shown by the admin API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from fleetpulse.alerts import bounded_http
from fleetpulse.alerts.connectors.base import FOLLOW_UP_FIELDS, DeliveryError, Notification, PermanentDeliveryError
from fleetpulse.alerts.connectors.config import ServiceNowConfig, TopdeskConfig, WebhookConfig, webhook_key
from fleetpulse.redact import scrub
from fleetpulse.retry import is_permanent_status

USER_AGENT = "fleetpulse-alerts/1"
ANSWER_DEADLINE_FACTOR = 3
"""A whole answer may take this many times the connector's timeout (which bounds each network wait)."""
_ITSM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What an ITSM record id may be before it becomes part of a request URL (ServiceNow sys_id, TOPdesk UUID)."""
MAX_REFERENCE_CHARS = 128
log = logging.getLogger(__name__)


def _post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    auth: httpx.BasicAuth | None,
    secrets: Sequence[str],
    method: str = "POST",
) -> Any:
    """POST (or PATCH) and return the parsed JSON (or None); every failure becomes a DeliveryError.

    Answers no retry can change (a redirect, 4xx but timeouts and rate limits) raise
    :class:`PermanentDeliveryError`; 401/403/407 concern every message to the target.
    """
    try:
        response = bounded_http.request(
            method,
            url,
            content=body,
            headers={"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
            | headers,
            timeout=timeout,
            deadline_s=ANSWER_DEADLINE_FACTOR * timeout,
            auth=auth,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(scrub(f"{type(exc).__name__}: {exc}", secrets)) from None
    status = response.status_code
    if status >= 300:
        message = scrub(f"HTTP {status}: {response.text}", secrets)
        if status < 400 or is_permanent_status(status):
            raise PermanentDeliveryError(message, whole_target=status in (401, 403, 407) or status < 400)
        raise DeliveryError(message)
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _lookup(
    url: str,
    params: dict[str, str],
    timeout: float,
    auth: httpx.BasicAuth,
    secrets: Sequence[str],
    within: str | None = None,
) -> dict[str, Any] | None:
    """GET the incident an earlier attempt created if its answer was lost (a timeout or a gateway
    error after the POST): the first record found, or None (see :func:`_records`)."""
    records = _records(url, params, timeout, auth, secrets, within)
    return records[0] if records else None


def _records(
    url: str,
    params: dict[str, str],
    timeout: float,
    auth: httpx.BasicAuth,
    secrets: Sequence[str],
    within: str | None = None,
) -> list[dict[str, Any]]:
    """GET a list of records: the incidents a lookup finds, or an incident's actions.

    The caller creates the incident after an empty list, so it means a definite answer only: nothing
    found (an empty list; TOPdesk's 204), or the account may not read incidents (403, 404), logged.
    Any other answer raises, so a retry never creates a second incident: an unreachable ITSM, 5xx,
    408, 429 or an answer that is not a JSON list of records -> DeliveryError (retried later); login
    refused -> PermanentDeliveryError for the whole target, as for any other answer no retry changes
    (a redirect, another 4xx). ``within``: the key holding the list (ServiceNow's ``result``).
    """
    try:
        response = bounded_http.request(
            "GET",
            url,
            params=params,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
            deadline_s=ANSWER_DEADLINE_FACTOR * timeout,
            auth=auth,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(scrub(f"{type(exc).__name__}: {exc}", secrets)) from None
    status = response.status_code
    if status in (403, 404):
        log.warning("ITSM lookup refused; going on without it", extra={"fields": {"status": status}})
        return []
    if status == 204:
        return []
    if status not in (200, 206):  # 206: TOPdesk's page when more records match than it holds
        message = scrub(f"lookup HTTP {status}: {response.text}", secrets)
        if 300 <= status < 400 or is_permanent_status(status):
            raise PermanentDeliveryError(message, whole_target=status in (401, 407) or status < 400)
        raise DeliveryError(message)
    try:
        found = response.json()
    except ValueError:
        found = None
    records = found.get(within) if within is not None and isinstance(found, dict) else found
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise DeliveryError("the ITSM's lookup answer is not a JSON list of records")
    return records


def _record_id(value: object, what: str) -> str:
    """An id the ITSM returned, checked before it becomes part of a request URL."""
    text = value if isinstance(value, str) else ""
    if not _ITSM_ID.fullmatch(text):
        raise PermanentDeliveryError(f"the ITSM returned an unusable {what} id", whole_target=False)
    return text


def _reference(*candidates: object) -> str | None:
    """The first usable reference among ``candidates`` (incident number, then id) as short printable text.

    It is stored with the outbox row and shown by the admin API: an ITSM's answer is not trusted to keep it sane.
    """
    for value in candidates:
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = "".join(ch for ch in str(value) if ch.isprintable())[:MAX_REFERENCE_CHARS]
            if text:
                return text
    return None


def _basic(username: str, password: str) -> tuple[httpx.BasicAuth, list[str]]:
    """The auth for httpx and the secrets its failures must never show (password, the header's user:password)."""
    return httpx.BasicAuth(username, password), [password, f"{username}:{password}"]


def _already_noted(connector: str, reference: str | None, notification: Notification) -> None:
    log.info(
        "update already on the incident (an earlier attempt's answer was lost); not added again",
        extra={"fields": {"connector": connector, "incident": reference, "update_id": notification.update_id}},
    )


def sign_webhook(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks ``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class Webhook:
    """POSTs the whole notification as JSON, signed per Standard Webhooks (https://www.standardwebhooks.com).

    ``webhook-id`` is derived from the body, so a retry of the same message carries the same id
    (receivers deduplicate on it) and two messages never share one; the signature covers id,
    timestamp and body, so a captured delivery cannot be replayed later or altered.
    """

    def __init__(self, config: WebhookConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.key = webhook_key(config.secret.get_secret_value()) if config.secret is not None else None

    def deliver(self, notification: Notification) -> str | None:
        unset = {name for name in FOLLOW_UP_FIELDS if getattr(notification, name) is None}
        body = notification.model_dump_json(exclude=unset).encode()  # a ticket or storm: the fields it always had
        msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:32]
        timestamp = int(self.clock())
        headers = {
            "X-Fleetpulse-Delivery": notification.dedup_key,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.key is not None:
            headers["webhook-signature"] = sign_webhook(self.key, msg_id, timestamp, body)
        _post(self.config.url, body, headers, self.config.timeout_s, None, self.config.secrets())
        return notification.dedup_key


_SN_URGENCY = {"critical": "1", "high": "1", "medium": "2", "low": "3"}
_SN_IMPACT = {"critical": "2", "high": "2", "medium": "3", "low": "3"}


class ServiceNow:
    """Creates an incident (or a problem-like incident for storms) via the Table API; updates
    (lifecycle changes, re-planned actions) become work notes on it.

    Idempotent across retries: an incident with our ``correlation_id`` is looked up first, and
    an update whose marker its work notes already carry is not noted again.
    """

    def __init__(self, config: ServiceNowConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> str | None:
        url = f"{self.config.instance_url.rstrip('/')}/api/now/table/{self.config.table}"
        auth, secrets = _basic(self.config.username, self.config.password.get_secret_value())
        params = {
            "sysparm_query": f"correlation_id={notification.dedup_key}",
            "sysparm_fields": "number,sys_id",
            "sysparm_limit": "1",
        }
        if notification.subject == "update" and notification.update_id:
            # the journal's text comes only as a display value; the check a retry needs
            params |= {"sysparm_fields": "number,sys_id,work_notes", "sysparm_display_value": "true"}
        existing = _lookup(url, params, self.config.timeout_s, auth, secrets, within="result")
        if notification.subject == "update":
            # news goes to the work notes; closing the incident stays IT-support's decision
            if existing is None or not existing.get("sys_id"):
                raise DeliveryError(f"incident {notification.dedup_key} not found (not created yet?)")
            sys_id = _record_id(existing["sys_id"], "incident")
            reference = _reference(existing.get("number"), sys_id)
            notes = existing.get("work_notes")
            if notification.update_id and isinstance(notes, str) and notification.marker() in notes:
                _already_noted(self.name, reference, notification)
                return reference
            body = json.dumps({"work_notes": notification.note_text()}).encode()
            _post(f"{url}/{sys_id}", body, {}, self.config.timeout_s, auth, secrets, method="PATCH")
            return reference
        if existing is not None:
            return _reference(existing.get("number"), existing.get("sys_id"))
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
        answer = _post(url, json.dumps(record).encode(), {}, self.config.timeout_s, auth, secrets)
        result = answer.get("result") if isinstance(answer, dict) else None
        return _reference(result.get("number"), result.get("sys_id")) if isinstance(result, dict) else None


TOPDESK_ACTIONS_CHECKED = 100
"""The most actions TOPdesk lists in one answer: the ones a retried update is looked for in."""
_TOPDESK_PRIORITY = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4"}


class Topdesk:
    """Creates a TOPdesk incident; updates (lifecycle changes, re-planned actions) become
    caller-invisible actions in its progress trail.

    The dedup key goes to ``externalNumber``, looked up first, so a retry after a lost answer
    does not create a second incident; an update whose marker the incident's latest actions
    already carry is not added again.
    """

    def __init__(self, config: TopdeskConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> str | None:
        url = f"{self.config.url.rstrip('/')}/tas/api/incidents"
        auth, secrets = _basic(self.config.username, self.config.app_password.get_secret_value())
        external = notification.dedup_key[:60]
        existing = _lookup(
            url,
            {"query": f"externalNumber=={external}", "fields": "id,number", "page_size": "1"},
            self.config.timeout_s,
            auth,
            secrets,
        )
        if notification.subject == "update":
            # lifecycle news becomes an action entry; closing the incident stays IT-support's decision
            if existing is None or not existing.get("id"):
                raise DeliveryError(f"incident {external} not found (not created yet?)")
            incident_id = _record_id(existing["id"], "incident")
            reference = _reference(existing.get("number"), incident_id)
            if notification.update_id and self._noted(f"{url}/id/{incident_id}/actions", notification, auth, secrets):
                _already_noted(self.name, reference, notification)
                return reference
            text = html.escape(notification.note_text()).replace("\n", "<br>")
            body = json.dumps({"action": text, "actionInvisibleForCaller": True}).encode()
            _post(f"{url}/id/{incident_id}", body, {}, self.config.timeout_s, auth, secrets, method="PATCH")
            return reference
        if existing is not None:
            return _reference(existing.get("number"), existing.get("id"))
        record: dict[str, Any] = {
            "caller": {"dynamicName": self.config.caller_name},
            "briefDescription": notification.title[:80],
            "request": notification.body,
            "externalNumber": external,
            "priority": {"name": _TOPDESK_PRIORITY[notification.urgency]},
        }
        if self.config.category:
            record["category"] = {"name": self.config.category}
        answer = _post(url, json.dumps(record).encode(), {}, self.config.timeout_s, auth, secrets)
        return _reference(answer.get("number"), answer.get("id")) if isinstance(answer, dict) else None

    def _noted(self, url: str, notification: Notification, auth: httpx.BasicAuth, secrets: Sequence[str]) -> bool:
        """Whether the incident's latest actions carry this update already (an earlier attempt whose answer
        was lost). TOPdesk lists at most ``TOPDESK_ACTIONS_CHECKED`` of them, newest first."""
        params = {"page_size": str(TOPDESK_ACTIONS_CHECKED)}
        actions = _records(url, params, self.config.timeout_s, auth, secrets)
        marker = notification.marker()
        return any(
            isinstance(text, str) and marker in text
            for action in actions
            for text in (action.get("memoText"), action.get("plainText"))
        )

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
from fleetpulse.alerts.connectors.base import (
    FOLLOW_UP_FIELDS,
    DeliveryError,
    Notification,
    PermanentDeliveryError,
    Receipt,
)
from fleetpulse.alerts.connectors.config import ServiceNowConfig, TopdeskConfig, WebhookConfig, webhook_key
from fleetpulse.redact import scrub
from fleetpulse.retry import is_permanent_status

USER_AGENT = "fleetpulse-alerts/1"
ANSWER_DEADLINE_FACTOR = 3
"""A whole answer may take this many times the connector's timeout (which bounds each network wait)."""
_ITSM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What an ITSM record id may be before it becomes part of a request URL (TOPdesk's UUID)."""
_SYS_ID = re.compile(r"[0-9a-fA-F]{32}")
"""A ServiceNow sys_id (a GUID as 32 hex digits): nothing else becomes part of a ServiceNow record URL."""
_TOPDESK_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
"""A TOPdesk incident id (a UUID): nothing else is kept for the updates or put into a path from the store."""
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
    response = _get(url, params, timeout, auth, secrets)
    status = response.status_code
    if status in (403, 404):
        log.warning("ITSM lookup refused; going on without it", extra={"fields": {"status": status}})
        return []
    if status == 204:
        return []
    if status not in (200, 206):  # 206: TOPdesk's page when more records match than it holds
        raise _unexpected("lookup", response, secrets)
    found = _json(response)
    records = found.get(within) if within is not None and isinstance(found, dict) else found
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise DeliveryError("the ITSM's lookup answer is not a JSON list of records")
    return records


def _record(
    url: str,
    params: dict[str, str],
    timeout: float,
    auth: httpx.BasicAuth,
    secrets: Sequence[str],
    within: str | None = "result",
) -> dict[str, Any] | None:
    """GET one record by its id, or None when there is no such record (404). ``within``: the key holding
    it (ServiceNow's ``result``; None for TOPdesk, which answers the record itself).

    403 (the account may not read it) is an empty record, logged: the caller goes on without what it
    would have read, as after a refused lookup. Other answers raise as in :func:`_records`.
    """
    response = _get(url, params, timeout, auth, secrets)
    status = response.status_code
    if status == 404:
        return None
    if status == 403:
        log.warning("ITSM record read refused; going on without it", extra={"fields": {"status": status}})
        return {}
    if status != 200:
        raise _unexpected("read", response, secrets)
    found = _json(response)
    record = found.get(within) if within is not None and isinstance(found, dict) else found
    if not isinstance(record, dict):
        raise DeliveryError("the ITSM's answer is not a JSON record")
    return record


def _get(
    url: str, params: dict[str, str], timeout: float, auth: httpx.BasicAuth, secrets: Sequence[str]
) -> bounded_http.Answer:
    """A bounded GET that follows no redirect; a network failure is a DeliveryError without the secrets."""
    try:
        return bounded_http.request(
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


def _unexpected(what: str, response: bounded_http.Answer, secrets: Sequence[str]) -> DeliveryError:
    """The error for an answer the caller has no use for: permanent for a redirect or what no retry changes
    (for the whole target when the login is refused), else retried later."""
    status = response.status_code
    message = scrub(f"{what} HTTP {status}: {response.text}", secrets)
    if 300 <= status < 400 or is_permanent_status(status):
        return PermanentDeliveryError(message, whole_target=status in (401, 407) or status < 400)
    return DeliveryError(message)


def _json(response: bounded_http.Answer) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _sys_id(value: object) -> str | None:
    """``value`` if it is a ServiceNow sys_id, else None: an answer cannot aim a later request elsewhere."""
    return value if isinstance(value, str) and _SYS_ID.fullmatch(value) else None


def _topdesk_id(value: object) -> str | None:
    """``value`` if it is a TOPdesk UUID, else None: an answer cannot aim a later request elsewhere."""
    return value if isinstance(value, str) and _TOPDESK_ID.fullmatch(value) else None


def _record_id(value: object, what: str) -> str:
    """An id the ITSM returned, checked before it becomes part of a request URL."""
    text = value if isinstance(value, str) else ""
    if not _ITSM_ID.fullmatch(text):
        raise PermanentDeliveryError(f"the ITSM returned an unusable {what} id", whole_target=False)
    return text


def _looked_up(reference: str | None, stored: str | None, found: str | None) -> Receipt | str | None:
    """What an update returns: its reference, with the (checked) id the lookup found the incident under when
    that is not the stored one, for the outbox to keep so later updates skip the 404 and the lookup."""
    return Receipt(reference, found) if found is not None and found != stored else reference


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
    an update whose marker its work notes already carry is not noted again. An update reads the
    incident by the sys_id returned at creation; only without one (or when that answers 404) is
    it looked up by correlation id, and the sys_id found is returned for the outbox to keep.
    """

    def __init__(self, config: ServiceNowConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> Receipt | str | None:
        url = f"{self.config.instance_url.rstrip('/')}/api/now/table/{self.config.table}"
        auth, secrets = _basic(self.config.username, self.config.password.get_secret_value())
        if notification.subject == "update":
            return self._update(url, notification, auth, secrets)
        params = {
            "sysparm_query": f"correlation_id={notification.dedup_key}",
            "sysparm_fields": "number,sys_id",
            "sysparm_limit": "1",
        }
        existing = _lookup(url, params, self.config.timeout_s, auth, secrets, within="result")
        if existing is not None:
            return self._receipt(existing)
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
        return self._receipt(result) if isinstance(result, dict) else None

    def _receipt(self, incident: dict[str, Any]) -> Receipt:
        """The incident's number for people and its sys_id for the updates (kept only if it is one)."""
        sys_id = _sys_id(incident.get("sys_id"))
        if incident.get("sys_id") is not None and sys_id is None:
            log.warning(
                "ServiceNow returned no usable sys_id; updates will look the incident up by correlation id",
                extra={"fields": {"connector": self.name}},
            )
        return Receipt(_reference(incident.get("number"), incident.get("sys_id")), sys_id)

    def _update(
        self, url: str, notification: Notification, auth: httpx.BasicAuth, secrets: Sequence[str]
    ) -> Receipt | str | None:
        """A work note on the incident; news only, closing it stays IT-support's decision."""
        fields = {"sysparm_fields": "number,sys_id"}
        if notification.update_id:
            # the journal's text comes only as a display value; the check a retry needs
            fields = {"sysparm_fields": "number,sys_id,work_notes", "sysparm_display_value": "true"}
        stored = notification.first_record_id
        sys_id = _sys_id(stored)
        if stored is not None and sys_id is None:
            log.warning(
                "stored incident id is no ServiceNow sys_id; looking the incident up by correlation id",
                extra={"fields": {"connector": self.name, "incident": notification.first_reference}},
            )
        incident = _record(f"{url}/{sys_id}", fields, self.config.timeout_s, auth, secrets) if sys_id else None
        found: str | None = None
        if sys_id and incident is None:
            log.warning(
                "incident not found by its stored sys_id (deleted or merged?); looking it up by correlation id",
                extra={"fields": {"connector": self.name, "incident": notification.first_reference, "sys_id": sys_id}},
            )
        if incident is None:
            params = {"sysparm_query": f"correlation_id={notification.dedup_key}", "sysparm_limit": "1"} | fields
            incident = _lookup(url, params, self.config.timeout_s, auth, secrets, within="result")
            if incident is None or not incident.get("sys_id"):
                if sys_id:
                    # created and since removed: no retry brings it back, an administrator decides
                    raise PermanentDeliveryError(
                        f"incident {notification.dedup_key} is gone: its sys_id {sys_id} answers 404 and no "
                        "incident has its correlation id (deleted or merged, or the account may not read it)",
                        whole_target=False,
                    )
                raise DeliveryError(f"incident {notification.dedup_key} not found (not created yet?)")
            sys_id = found = _sys_id(incident["sys_id"])
            if sys_id is None:
                raise PermanentDeliveryError("the ITSM returned an unusable incident id", whole_target=False)
        reference = _reference(incident.get("number"), notification.first_reference, sys_id)
        notes = incident.get("work_notes")
        if notification.update_id and isinstance(notes, str) and notification.marker() in notes:
            _already_noted(self.name, reference, notification)
            return _looked_up(reference, stored, found)
        body = json.dumps({"work_notes": notification.note_text()}).encode()
        _post(f"{url}/{sys_id}", body, {}, self.config.timeout_s, auth, secrets, method="PATCH")
        return _looked_up(reference, stored, found)


TOPDESK_ACTIONS_PAGE = 100
"""The most actions TOPdesk lists in one answer."""
TOPDESK_ACTION_PAGES = 10
"""Pages of actions (the newest 1,000) a retried update is looked for in: a bounded number of requests
per update, however long the incident's trail."""
_TOPDESK_PRIORITY = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4"}


class Topdesk:
    """Creates a TOPdesk incident; updates (lifecycle changes, re-planned actions) become
    caller-invisible actions in its progress trail.

    The dedup key goes to ``externalNumber``, looked up first, so a retry after a lost answer
    does not create a second incident; an update whose marker the incident's newest
    ``TOPDESK_ACTION_PAGES`` pages of actions already carry is not added again. An update reads
    the incident by the id returned at creation; only without one (or when that answers 404) is
    it looked up by external number, and the id found is returned for the outbox to keep.
    """

    def __init__(self, config: TopdeskConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, notification: Notification) -> Receipt | str | None:
        url = f"{self.config.url.rstrip('/')}/tas/api/incidents"
        auth, secrets = _basic(self.config.username, self.config.app_password.get_secret_value())
        if notification.subject == "update":
            return self._update(url, notification, auth, secrets)
        external = notification.dedup_key[:60]
        existing = self._lookup(url, external, auth, secrets)
        if existing is not None:
            return self._receipt(existing)
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
        return self._receipt(answer) if isinstance(answer, dict) else None

    def _lookup(self, url: str, external: str, auth: httpx.BasicAuth, secrets: Sequence[str]) -> dict[str, Any] | None:
        params = {"query": f"externalNumber=={external}", "fields": "id,number", "page_size": "1"}
        return _lookup(url, params, self.config.timeout_s, auth, secrets)

    def _receipt(self, incident: dict[str, Any]) -> Receipt:
        """The incident's number for people and its id for the updates (kept only if it is a UUID)."""
        incident_id = _topdesk_id(incident.get("id"))
        if incident.get("id") is not None and incident_id is None:
            log.warning(
                "TOPdesk returned no usable incident id; updates will look the incident up by external number",
                extra={"fields": {"connector": self.name}},
            )
        return Receipt(_reference(incident.get("number"), incident.get("id")), incident_id)

    def _update(
        self, url: str, notification: Notification, auth: httpx.BasicAuth, secrets: Sequence[str]
    ) -> Receipt | str | None:
        """An action on the incident; news only, closing it stays IT-support's decision."""
        external = notification.dedup_key[:60]
        stored = notification.first_record_id
        incident_id = _topdesk_id(stored)
        if stored is not None and incident_id is None:
            log.warning(
                "stored incident id is no TOPdesk UUID; looking the incident up by external number",
                extra={"fields": {"connector": self.name, "incident": notification.first_reference}},
            )
        incident: dict[str, Any] | None = None
        found: str | None = None
        if incident_id:
            incident = _record(f"{url}/id/{incident_id}", {}, self.config.timeout_s, auth, secrets, within=None)
            if incident is None:
                log.warning(
                    "incident not found by its stored id (deleted or archived?); looking it up by external number",
                    extra={
                        "fields": {"connector": self.name, "incident": notification.first_reference, "id": incident_id}
                    },
                )
        if incident is None:
            incident = self._lookup(url, external, auth, secrets)
            if incident is None or not incident.get("id"):
                if incident_id:
                    # created and since removed: no retry brings it back, an administrator decides
                    raise PermanentDeliveryError(
                        f"incident {external} is gone: its id {incident_id} answers 404 and no incident has "
                        "its external number (deleted or archived, or the account may not read it)",
                        whole_target=False,
                    )
                raise DeliveryError(f"incident {external} not found (not created yet?)")
            incident_id = _record_id(incident["id"], "incident")
            found = _topdesk_id(incident_id)  # kept for later updates only if it is a UUID
        reference = _reference(incident.get("number"), notification.first_reference, incident_id)
        actions = f"{url}/id/{incident_id}/actions"
        if notification.update_id and self._noted(actions, reference, notification, auth, secrets):
            _already_noted(self.name, reference, notification)
            return _looked_up(reference, stored, found)
        text = html.escape(notification.note_text()).replace("\n", "<br>")
        body = json.dumps({"action": text, "actionInvisibleForCaller": True}).encode()
        _post(f"{url}/id/{incident_id}", body, {}, self.config.timeout_s, auth, secrets, method="PATCH")
        return _looked_up(reference, stored, found)

    def _noted(
        self, url: str, reference: str | None, notification: Notification, auth: httpx.BasicAuth, secrets: Sequence[str]
    ) -> bool:
        """Whether the incident's actions carry this update already (an earlier attempt whose answer was lost).

        TOPdesk lists them newest first, a page at a time; a short page is the last. Past
        ``TOPDESK_ACTION_PAGES`` pages the update is added unchecked, with a warning.
        """
        marker = notification.marker()
        for page in range(TOPDESK_ACTION_PAGES):
            params = {"start": str(page * TOPDESK_ACTIONS_PAGE), "page_size": str(TOPDESK_ACTIONS_PAGE)}
            actions = _records(url, params, self.config.timeout_s, auth, secrets)
            if any(
                isinstance(text, str) and marker in text
                for action in actions
                for text in (action.get("memoText"), action.get("plainText"))
            ):
                return True
            if len(actions) < TOPDESK_ACTIONS_PAGE:
                return False
        log.warning(
            "incident has more actions than are checked for an earlier copy of this update; "
            "a retry after a lost answer may add it twice",
            extra={
                "fields": {
                    "connector": self.name,
                    "incident": reference,
                    "update_id": notification.update_id,
                    "actions_checked": TOPDESK_ACTION_PAGES * TOPDESK_ACTIONS_PAGE,
                }
            },
        )
        return False

"""The API's front door (pure ASGI): authenticate from the headers, then admit a bounded body.

Order matters for memory: an unauthenticated request is answered 401 before a byte of its
body is read, and the server stops reading a socket whose body nobody receives. An
authenticated request announcing more than ``max_body_bytes`` is answered 413 at once; a
body without a length (chunked) is counted as it arrives and refused as soon as it passes the
limit. Either way no more than the limit is ever held, however large the upload.

A browser asking for a page without a session is sent to the login page (303) instead of
getting a 401: browsers answer a 401 with their password pop-up, which nobody should meet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.datastructures import Headers
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.exc import OperationalError

from fleetpulse.alerts.api.access import request_id
from fleetpulse.alerts.api.auth import PRINCIPAL_STATE, Authenticates, AuthFailure, RequestHead, client_address
from fleetpulse.alerts.api.sessions import CSRF_HEADER
from fleetpulse.alerts.settings import ApiLimits

log = logging.getLogger(__name__)
# the ASGI interface (as starlette.types spells it; FastAPI is the dependency this module declares)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body passes the limit, after the gate has answered 413 itself."""


class RequestGate:
    """ASGI middleware: authentication for every path but ``open_paths``, then the body limit."""

    def __init__(
        self, app: ASGIApp, authenticator: Authenticates, limits: ApiLimits, open_paths: Collection[str]
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limits = limits
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        if scope["path"] not in self.open_paths:
            peer = scope["client"][0] if scope.get("client") else None
            address = client_address(peer, headers.get("x-forwarded-for"), self.limits.trusted_proxies)
            head = RequestHead(
                scope["method"],
                headers.get("authorization"),
                headers.get("cookie"),
                headers.get(CSRF_HEADER),
                address,
                request_id(Request(scope)),  # the id the routes' audit records of this request carry too
            )
            try:
                principal = await run_in_threadpool(self.authenticator.authenticate, head)
            except AuthFailure as failure:
                if failure.status_code == 401 and _is_page_visit(scope, headers):
                    await _to_login(scope, receive, send)
                    return
                await _refuse(scope, receive, send, failure.status_code, failure.detail, failure.headers, has_body)
                return
            except OperationalError as exc:
                log.error("ticket store unavailable", extra={"fields": {"error": str(exc.orig)[:300]}})
                await _refuse(scope, receive, send, 503, "ticket store unavailable, retry later", {}, has_body)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
            await _refuse(scope, receive, send, 400, "invalid Content-Length", {}, True)
            return
        if declared is not None and int(declared) > limit:
            await _refuse(scope, receive, send, 413, f"request body larger than {limit} bytes", {}, True)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        received = 0
        started = refused = False

        async def bounded_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not (started or refused):
                        refused = True
                        await _refuse(scope, receive, send, 413, f"request body larger than {limit} bytes", {}, True)
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # 413 is sent: whatever the app makes of the aborted read is not
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            # the app may re-raise the aborted read as anything (a 400, an ExceptionGroup from a
            # task group); once the 413 is out, that failure is the expected end of the request
            if not refused:
                raise


def _is_page_visit(scope: Scope, headers: Headers) -> bool:
    """A browser navigating to a page (not a script or API client, which get the 401)."""
    path: str = scope["path"]
    return (
        scope["method"] in ("GET", "HEAD")
        and not path.startswith("/api/")
        and path != "/openapi.json"
        and "text/html" in headers.get("accept", "")
    )


async def _to_login(scope: Scope, receive: Receive, send: Send) -> None:
    target = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
    await RedirectResponse("/auth/login?" + urlencode({"next": target}), status_code=303)(scope, receive, send)


async def _refuse(
    scope: Scope, receive: Receive, send: Send, code: int, detail: str, headers: dict[str, str], unread_body: bool
) -> None:
    """Answer without reading the body; a connection with an unread body is closed, not drained."""
    if unread_body:
        headers = {**headers, "Connection": "close"}
    await JSONResponse({"detail": detail}, status_code=code, headers=headers)(scope, receive, send)

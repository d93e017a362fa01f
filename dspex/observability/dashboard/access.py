"""Who may read the dashboard: a bearer token, required whenever the dashboard is reachable from
another machine.

The dashboard serves job data (inputs, gold answers, outputs, prompts and completions in the
drill-down), so:

- it binds to loopback by default, where anyone who can reach it already runs on this host;
- binding any other address needs a token (``--token`` / ``DSPEX_DASHBOARD_TOKEN``), or an explicit
  ``--insecure-no-token`` that is logged as a warning (:func:`check_binding`);
- with a token set (on any address), every request needs it: an ``Authorization: Bearer TOKEN``
  header (scripts, ``curl``), or the cookie a browser gets by opening ``/?token=TOKEN`` once. That
  visit is answered with a redirect to the same page without the token in its address, so it does
  not stay in the address bar or the history. Anything else is a 401.

The cookie holds a digest of the token, not the token, and is ``HttpOnly`` and ``SameSite=Strict``
(no script reads it, no other site's page sends it). Tokens are compared in constant time.

    >>> app = web.Application(middlewares=[require_token("s3cret-s3cret-s3cret")])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from dspex.errors import ConfigurationError

__all__ = [
    "COOKIE_NAME",
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENV",
    "check_binding",
    "is_loopback",
    "require_token",
]

logger = logging.getLogger(__name__)

TOKEN_ENV: Final = "DSPEX_DASHBOARD_TOKEN"
"""The environment variable the CLI reads the token from (kept out of ``ps`` listings)."""
COOKIE_NAME: Final = "dspex_dashboard"
MIN_TOKEN_LENGTH: Final = 16
_QUERY_PARAM: Final = "token"
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (``127.0.0.1``, ``::1``,
    ``localhost``); a wildcard (``0.0.0.0``, ``::``, empty) or a name that does not resolve is not."""
    if host.strip() in ("", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {str(entry[4][0]) for entry in found}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_binding(host: str, token: str | None, *, insecure_no_token: bool = False) -> None:
    """Refuse to serve job data on a non-loopback ``host`` without a token (ConfigurationError),
    unless ``insecure_no_token`` says so (then a warning is logged); refuse a short token."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the dashboard token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            f"(make one with: {_MAKE_ONE})"
        )
    if token is not None or is_loopback(host):
        return
    if insecure_no_token:
        logger.warning(
            "dashboard on %s WITHOUT a token: anyone who can reach this address can read every job's "
            "inputs, outputs and prompts",
            host,
        )
        return
    raise ConfigurationError(
        f"the dashboard serves job data; binding {host!r} (not loopback) needs a token: set "
        f"{TOKEN_ENV} (or pass --token), or pass --insecure-no-token if the network itself is "
        f"trusted. Make a token with: {_MAKE_ONE}"
    )


def require_token(token: str) -> Middleware:
    """An aiohttp middleware that lets through only requests carrying ``token`` (module docs)."""
    expected = token.encode("utf-8")
    cookie_value = _cookie_value(token)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _bearer_matches(request, expected) or _cookie_matches(request, cookie_value):
            return await handler(request)
        offered = request.query.get(_QUERY_PARAM)
        if offered is not None and hmac.compare_digest(offered.encode("utf-8"), expected):
            return _redirect_with_cookie(request, cookie_value)
        return _unauthorized(request)

    return middleware


def _cookie_value(token: str) -> str:
    # A digest, so a cookie read off a disk or a proxy log is not the token itself.
    return hashlib.sha256(b"dspex-dashboard-cookie\x00" + token.encode("utf-8")).hexdigest()


def _bearer_matches(request: web.Request, expected: bytes) -> bool:
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not offered:
        return False
    return hmac.compare_digest(offered.strip().encode("utf-8"), expected)


def _cookie_matches(request: web.Request, cookie_value: str) -> bool:
    offered = request.cookies.get(COOKIE_NAME)
    return offered is not None and hmac.compare_digest(offered.encode("utf-8"), cookie_value.encode())


def _redirect_with_cookie(request: web.Request, cookie_value: str) -> web.StreamResponse:
    """The same address without ``token`` in its query, with the cookie set."""
    kept = request.rel_url.without_query_params(_QUERY_PARAM)
    response = web.Response(status=303, headers={"Location": str(kept)})
    response.set_cookie(
        COOKIE_NAME, cookie_value, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
    return response


def _unauthorized(request: web.Request) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="dspex dashboard"'}
    message = (
        "this dashboard needs its token: send 'Authorization: Bearer TOKEN', or open "
        "/?token=TOKEN once in the browser"
    )
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=401, headers=headers)
    return web.Response(text=message + "\n", status=401, headers=headers)

"""The simulated LM's error answers, shaped like OpenAI's ``{"error": {...}}`` bodies."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

__all__ = [
    "bad_request",
    "check_chat_body",
    "internal_error",
    "model_not_found",
    "not_found",
    "rate_limited",
    "read_json",
    "server_error",
    "too_large",
    "unauthorized",
    "unavailable",
]


def _error(
    status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def bad_request(message: str) -> web.Response:
    """400: the request body is not what the endpoint takes."""
    return _error(400, f"{message} (simulated LM)", "invalid_request_error", None)


def unauthorized(had_header: bool) -> web.Response:
    """401 with OpenAI's ``invalid_api_key`` code; the key itself is never echoed."""
    if had_header:
        message = "Incorrect API key provided to the simulated LM."
    else:
        message = "You didn't provide an API key. The simulated LM requires 'Authorization: Bearer <key>'."
    return _error(401, message, "invalid_request_error", "invalid_api_key")


def model_not_found(model: str) -> web.Response:
    """404 for a model the simulated LM was not told about."""
    message = f"The model `{model}` does not exist or you do not have access to it (simulated LM)."
    return _error(404, message, "invalid_request_error", "model_not_found")


def not_found(message: str) -> web.Response:
    """404 for an object (file, batch) the simulated LM does not have."""
    return _error(404, f"{message} (simulated LM)", "invalid_request_error", None)


def too_large(message: str) -> web.Response:
    """413 for an upload over the simulated LM's size limits."""
    return _error(413, f"{message} (simulated LM)", "invalid_request_error", "file_too_large")


def rate_limited(wait: float, rate: float) -> web.Response:
    """429 with ``Retry-After`` (whole seconds, as OpenAI sends) and ``retry-after-ms`` (exact)."""
    headers = {
        "Retry-After": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
    }
    message = (
        f"Rate limit reached for the simulated LM ({rate:g} requests/s). Please try again in {wait:.3f}s."
    )
    return _error(429, message, "requests", "rate_limit_exceeded", headers)


def server_error() -> web.Response:
    """500, as a provider's transient failure."""
    return _error(
        500, "The simulated LM had an injected server error. Retry your request.", "server_error", None
    )


def internal_error() -> web.Response:
    """500 for a request the simulation itself failed on (a bug: its log has the traceback)."""
    return _error(
        500, "The simulated LM failed on this request; see its log.", "server_error", "internal_error"
    )


def unavailable() -> web.Response:
    """503 during a simulated outage."""
    return _error(503, "The simulated LM is down (simulated outage).", "server_error", "service_unavailable")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and the content id refuses them
    raise ValueError(f"{name} is not valid JSON")


# one decoder for every request: json.loads with parse_constant builds a new JSONDecoder per call
_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _read_body(raw: bytes) -> Any:
    # what json.loads does with bytes (UTF-8, -16 or -32, found from the first bytes), decoder reused
    return _decoder.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


async def read_json(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or a 400 response saying what is wrong with it."""
    try:
        body = _read_body(await request.read())
    except ValueError as exc:
        return bad_request(f"the request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return bad_request("the request body must be a JSON object")
    return body


def check_chat_body(body: dict[str, Any]) -> web.Response | None:
    """A 400 for a chat request without a model or messages, or with odd tools or stream options."""
    if not isinstance(body.get("model"), str):
        return bad_request("`model` is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return bad_request("`messages` must be a non-empty list of objects")
    if body.get("stream_options") is not None and not isinstance(body.get("stream_options"), dict):
        return bad_request("`stream_options` must be an object")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        return bad_request("`tools` must be a list of objects")
    return None

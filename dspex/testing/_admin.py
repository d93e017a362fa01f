"""The simulated LM's /admin endpoints: what tests use to watch and steer it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from dspex.errors import ConfigurationError
from dspex.testing import _errors as err

if TYPE_CHECKING:
    from dspex.testing.sim_lm import SimulatedLM

__all__ = ["admin_routes"]

_DEFAULT_LOG_LIMIT = 100


async def _json_or_empty(request: web.Request) -> dict[str, Any] | web.Response:
    if not request.can_read_body:
        return {}
    return await err.read_json(request)


def admin_routes(sim: SimulatedLM) -> list[web.RouteDef]:
    """Routes bound to ``sim``; see :mod:`dspex.testing.sim_lm` for what each does."""

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(sim.stats())

    async def requests(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", _DEFAULT_LOG_LIMIT))
        except ValueError:
            return err.bad_request("`limit` must be an integer")
        entries = [call.as_dict() for call in list(sim.log)[-limit:]] if limit > 0 else []
        return web.json_response({"requests": entries})

    async def get_config(request: web.Request) -> web.Response:
        return web.json_response(sim.config.model_dump(mode="json"))

    async def set_config(request: web.Request) -> web.Response:
        knobs = await _json_or_empty(request)
        if isinstance(knobs, web.Response):
            return knobs
        try:
            config = sim.configure(**knobs)
        except ConfigurationError as exc:
            return err.bad_request(str(exc))
        return web.json_response(config.model_dump(mode="json"))

    async def hold(request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if isinstance(body, web.Response):
            return body
        after = body.get("after", 0)
        if not isinstance(after, int) or after < 0:
            return err.bad_request("`after` must be a non-negative integer")
        sim.hold(after)
        return web.json_response(sim.stats())

    async def release(request: web.Request) -> web.Response:
        sim.release()
        return web.json_response(sim.stats())

    async def down(request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if isinstance(body, web.Response):
            return body
        mode = str(body.get("mode", "503"))
        if mode not in ("503", "drop"):
            return err.bad_request("`mode` must be '503' or 'drop'")
        sim.down("503" if mode == "503" else "drop")
        return web.json_response(sim.stats())

    async def up(request: web.Request) -> web.Response:
        sim.up()
        return web.json_response(sim.stats())

    async def reset(request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response(sim.stats())

    return [
        web.get("/admin/stats", stats),
        web.get("/admin/requests", requests),
        web.get("/admin/config", get_config),
        web.post("/admin/config", set_config),
        web.post("/admin/hold", hold),
        web.post("/admin/release", release),
        web.post("/admin/down", down),
        web.post("/admin/up", up),
        web.post("/admin/reset", reset),
    ]

"""The simulated LM's /admin endpoints: what tests use to watch and steer it.

Each route is an aiohttp handler that reads the request (query, JSON body) on the loop that accepted
it, then runs the route's action, which reads or changes the simulation, through ``hop``: on the
LM's own listener the action runs in place; on the admin listener (:class:`AdminListener`) it hops
to the LM's loop, which owns the simulation's state.

Why an admin listener of its own: two cold predictors open about 2,000 connections to the simulated
LM at once, and on a loaded machine the LM's accept queue held ~1,800 of them for over 20 s (uvloop;
the loop itself was idle in between). A control request on a new connection waited behind all of
them, past its client's 10 s timeout. On a listener and event loop of its own it waits only for the
LM loop's next turn.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from dspex.errors import ConfigurationError
from dspex.testing import _errors as err

if TYPE_CHECKING:
    from dspex.testing.sim_lm import SimulatedLM

__all__ = ["AdminListener", "admin_routes"]

_DEFAULT_LOG_LIMIT = 100
T = TypeVar("T")
# Runs an action (a plain function of the simulation's state) where that state lives.
Hop = Callable[[Callable[[], T]], Awaitable[T]]
Body = dict[str, Any]
Action = Callable[[Mapping[str, str], Body], web.Response]


async def _in_place(action: Callable[[], T]) -> T:
    return action()


async def _json_or_empty(request: web.Request) -> Body | web.Response:
    if not request.can_read_body:
        return {}
    return await err.read_json(request)


def _actions(sim: SimulatedLM) -> list[tuple[str, str, Action, bool]]:
    """(method, path, action, reads a body) of every admin route; see :mod:`dspex.testing.sim_lm`."""

    def stats(query: Mapping[str, str], body: Body) -> web.Response:
        return web.json_response(sim.stats())

    def requests(query: Mapping[str, str], body: Body) -> web.Response:
        try:
            limit = int(query.get("limit", _DEFAULT_LOG_LIMIT))
        except ValueError:
            return err.bad_request("`limit` must be an integer")
        entries = [call.as_dict() for call in list(sim.log)[-limit:]] if limit > 0 else []
        return web.json_response({"requests": entries})

    def get_config(query: Mapping[str, str], body: Body) -> web.Response:
        return web.json_response(sim.config.model_dump(mode="json"))

    def set_config(query: Mapping[str, str], body: Body) -> web.Response:
        try:
            config = sim.configure(**body)
        except ConfigurationError as exc:
            return err.bad_request(str(exc))
        return web.json_response(config.model_dump(mode="json"))

    def hold(query: Mapping[str, str], body: Body) -> web.Response:
        after = body.get("after", 0)
        if not isinstance(after, int) or after < 0:
            return err.bad_request("`after` must be a non-negative integer")
        sim.hold(after)
        return web.json_response(sim.stats())

    def release(query: Mapping[str, str], body: Body) -> web.Response:
        sim.release()
        return web.json_response(sim.stats())

    def down(query: Mapping[str, str], body: Body) -> web.Response:
        mode = str(body.get("mode", "503"))
        if mode not in ("503", "drop"):
            return err.bad_request("`mode` must be '503' or 'drop'")
        sim.down("503" if mode == "503" else "drop")
        return web.json_response(sim.stats())

    def up(query: Mapping[str, str], body: Body) -> web.Response:
        sim.up()
        return web.json_response(sim.stats())

    def reset(query: Mapping[str, str], body: Body) -> web.Response:
        sim.reset()
        return web.json_response(sim.stats())

    return [
        ("GET", "/admin/stats", stats, False),
        ("GET", "/admin/requests", requests, False),
        ("GET", "/admin/config", get_config, False),
        ("POST", "/admin/config", set_config, True),
        ("POST", "/admin/hold", hold, True),
        ("POST", "/admin/release", release, False),
        ("POST", "/admin/down", down, True),
        ("POST", "/admin/up", up, False),
        ("POST", "/admin/reset", reset, False),
    ]


def _handler(action: Action, reads_body: bool, hop: Hop[web.Response]) -> Callable[..., Any]:
    async def handle(request: web.Request) -> web.Response:
        body = await _json_or_empty(request) if reads_body else {}
        if isinstance(body, web.Response):
            return body
        query = dict(request.query)
        return await hop(lambda: action(query, body))

    return handle


def admin_routes(sim: SimulatedLM, hop: Hop[web.Response] = _in_place) -> list[web.RouteDef]:
    """Routes bound to ``sim``; ``hop`` runs each route's action where the simulation lives."""
    return [
        web.route(method, path, _handler(action, reads_body, hop))
        for method, path, action, reads_body in _actions(sim)
    ]


class AdminListener:
    """The /admin routes on a port and an event loop (a daemon thread) of their own; each action
    runs on ``sim_loop``, the loop serving the simulation (see the module docs for why)."""

    def __init__(self, sim: SimulatedLM, sim_loop: asyncio.AbstractEventLoop) -> None:
        self._sim, self._sim_loop = sim, sim_loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    async def _hop(self, action: Callable[[], T]) -> T:
        async def run() -> T:
            return action()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._sim_loop))

    async def _serve(self, host: str, port: int) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.add_routes(admin_routes(self._sim, self._hop))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        return runner, int(runner.addresses[0][1])

    def start(self, host: str, port: int = 0) -> int:
        """Listen on ``port`` (0: a free one); returns the bound port."""
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="dspex-sim-lm-admin", daemon=True)
        self._thread.start()
        self._runner, bound = asyncio.run_coroutine_threadsafe(self._serve(host, port), loop).result(30.0)
        return bound

    def stop(self) -> None:
        """Close the listener and end its thread (not from the LM's loop while it waits on an action)."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30.0)
        loop.close()
        self._loop = self._thread = self._runner = None

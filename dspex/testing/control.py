"""Starting, stopping and steering the simulated LM from tests, demos and benchmarks.

    from dspex.testing import SimulatedLMServer

    with SimulatedLMServer(latency=0.1, rate=200) as sim:      # a subprocess on a free port
        lm = dspex.LM("openai/simulated", api_base=sim.base_url)
        sim.control.hold()                                     # chat requests now wait
        ...                                                    # start a job
        sim.control.wait_until(lambda s: s["held"] >= 10)      # an event, not a sleep
        sim.control.release()
        assert sim.control.stats()["completions_ok"] == expected_calls

``SimulatedLMServer(in_process=True)`` serves from a thread of this process instead (cheaper for unit
tests; ``kill()`` is then a ``stop()``). ``stop()`` then ``start()`` (or ``restart()``) comes back on
the same port, which is how outage tests take the LM away and bring it back. Knobs changed at
runtime through ``control.configure(...)`` last until the server stops; a restart starts again from
the constructor's knobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
from aiohttp import web

from dspex.errors import ConfigurationError, LMConnectionError, LMTimeoutError
from dspex.testing._server import SimLMConfig, SimulatedLM, start_server

__all__ = ["AsyncSimLMControl", "SimLMControl", "SimulatedLMServer"]

Stats = dict[str, Any]
_KEY_ENV = "DSPEX_SIM_LM_API_KEY"  # how the key reaches the subprocess: never on its command line
_POLL_S = 0.02


class SimLMControl:
    """A synchronous client of the simulated LM's ``/admin`` endpoints."""

    def __init__(self, root_url: str, *, timeout: float = 10.0) -> None:
        self.root_url = root_url.rstrip("/")
        self._http = httpx.Client(base_url=self.root_url, timeout=timeout)

    def _do(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params or None)
        except httpx.TransportError as exc:
            raise LMConnectionError(f"the simulated LM at {self.root_url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            raise ConfigurationError(f"simulated LM {path}: {response.status_code} {response.text}")
        return response.json()

    def stats(self) -> Stats:
        """Counters, state and configuration (``GET /admin/stats``)."""
        return dict(self._do("GET", "/admin/stats"))

    def requests(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` requests of the request log, oldest first."""
        return list(self._do("GET", "/admin/requests", limit=limit)["requests"])

    def hold(self, after: int = 0) -> Stats:
        """Chat requests wait for :meth:`release` (after letting ``after`` more through)."""
        return dict(self._do("POST", "/admin/hold", {"after": after}))

    def release(self) -> Stats:
        """Let every held request go on, and stop holding."""
        return dict(self._do("POST", "/admin/release"))

    def reset(self) -> Stats:
        """Zero the counters and forget the request log."""
        return dict(self._do("POST", "/admin/reset"))

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs (see ``SimLMConfig``); returns the whole new configuration."""
        return dict(self._do("POST", "/admin/config", knobs))

    def down(self, mode: str = "503") -> Stats:
        """Start a simulated outage: ``"503"`` answers, or ``"drop"``ped connections."""
        return dict(self._do("POST", "/admin/down", {"mode": mode}))

    def up(self) -> Stats:
        """End a simulated outage."""
        return dict(self._do("POST", "/admin/up"))

    def wait_until(self, predicate: Callable[[Stats], bool], *, timeout: float = 30.0) -> Stats:
        """Poll stats until ``predicate(stats)`` holds; LMTimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(stats := self.stats()):
            if time.monotonic() > deadline:
                raise LMTimeoutError(
                    f"the simulated LM did not reach the awaited state in {timeout}s: {stats}"
                )
            time.sleep(_POLL_S)
        return stats

    def close(self) -> None:
        self._http.close()


class AsyncSimLMControl:
    """The asynchronous twin of :class:`SimLMControl`, for tests that run inside an event loop."""

    def __init__(self, root_url: str, *, timeout: float = 10.0) -> None:
        self.root_url = root_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.root_url, timeout=timeout)

    async def _do(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        try:
            response = await self._http.request(method, path, json=body, params=params or None)
        except httpx.TransportError as exc:
            raise LMConnectionError(f"the simulated LM at {self.root_url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            raise ConfigurationError(f"simulated LM {path}: {response.status_code} {response.text}")
        return response.json()

    async def stats(self) -> Stats:
        return dict(await self._do("GET", "/admin/stats"))

    async def requests(self, limit: int = 100) -> list[dict[str, Any]]:
        return list((await self._do("GET", "/admin/requests", limit=limit))["requests"])

    async def hold(self, after: int = 0) -> Stats:
        return dict(await self._do("POST", "/admin/hold", {"after": after}))

    async def release(self) -> Stats:
        return dict(await self._do("POST", "/admin/release"))

    async def reset(self) -> Stats:
        return dict(await self._do("POST", "/admin/reset"))

    async def configure(self, **knobs: Any) -> dict[str, Any]:
        return dict(await self._do("POST", "/admin/config", knobs))

    async def wait_until(self, predicate: Callable[[Stats], bool], *, timeout: float = 30.0) -> Stats:
        """Poll stats until ``predicate(stats)`` holds; LMTimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(stats := await self.stats()):
            if time.monotonic() > deadline:
                raise LMTimeoutError(
                    f"the simulated LM did not reach the awaited state in {timeout}s: {stats}"
                )
            await asyncio.sleep(_POLL_S)
        return stats

    async def aclose(self) -> None:
        await self._http.aclose()


class _Backend(Protocol):
    def start(self, host: str, port: int, admin_port: int) -> tuple[int, int | None]: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    @property
    def running(self) -> bool: ...


class _SubprocessBackend:
    """``python -m dspex.testing.sim_lm`` in a child process; output goes to ``log_path``."""

    def __init__(self, config: SimLMConfig, log_path: Path, startup_timeout: float) -> None:
        self._config, self.log_path, self._startup_timeout = config, log_path, startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(
        self, host: str, port: int, admin_port: int, folder: Path
    ) -> tuple[list[str], dict[str, str]]:
        knobs = self._config.model_dump(mode="json", exclude={"require_api_key"}, exclude_defaults=True)
        command = [sys.executable, "-m", "dspex.testing.sim_lm", "--host", host, "--port", str(port)]
        command += [
            "--port-file",
            str(folder / "port"),
            "--admin-port",
            str(admin_port),
            "--admin-port-file",
            str(folder / "admin-port"),
            "--config-json",
            json.dumps(knobs),
            "--log-level",
            "WARNING",
        ]
        env = dict(os.environ)
        if self._config.require_api_key is not None:
            env[_KEY_ENV] = self._config.require_api_key.get_secret_value()
            command += ["--require-api-key-env", _KEY_ENV]
        return command, env

    def start(self, host: str, port: int, admin_port: int) -> tuple[int, int | None]:
        """The LM's port and its admin listener's (the admin port file is written first)."""
        folder = Path(tempfile.mkdtemp(prefix="dspex-sim-lm-"))
        command, env = self._command(host, port, admin_port, folder)
        try:
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            bound = self._wait_for_port(folder / "port")
            return bound, int((folder / "admin-port").read_text(encoding="utf-8"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + self._startup_timeout
        while not port_file.exists():
            if self.process is not None and self.process.poll() is not None:
                raise LMConnectionError(f"the simulated LM exited at start:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise LMConnectionError(f"the simulated LM did not start in {self._startup_timeout}s")
            time.sleep(_POLL_S)
        return int(port_file.read_text(encoding="utf-8"))

    def _log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]

    def _signal(self, signum: int, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        self._signal(signal.SIGTERM, timeout=10.0)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, timeout=10.0)


async def _settle(turns: int = 3, most: int = 200) -> None:
    """Loop turns until no other task is left on this loop (connection handlers finishing after a
    cleanup, at most ``most`` turns), then ``turns`` more: a closed connection's socket is closed a
    turn after its handler ends, and one a busy machine had not reached yet is left for the garbage
    collector, which warns about it during whatever test runs then."""
    me = asyncio.current_task()
    for _ in range(most):
        if not any(task is not me for task in asyncio.all_tasks()):
            break
        await asyncio.sleep(0)
    for _ in range(turns):
        await asyncio.sleep(0)


class _ThreadBackend:
    """The server on an event loop in a daemon thread of this process."""

    def __init__(self, config: SimLMConfig) -> None:
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    def start(self, host: str, port: int, admin_port: int) -> tuple[int, int | None]:
        """The LM's port; no admin listener of its own (None: /admin is served on the LM's port)."""
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="dspex-simulated-lm", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_server(SimulatedLM(self._config), host, port), loop)
        self._runner, bound = future.result(timeout=30.0)
        return bound, None

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30.0)
            # Closing a connection closes its socket a loop turn later: let those turns run, or the
            # sockets of connections cut by cleanup() are left for the garbage collector.
            asyncio.run_coroutine_threadsafe(_settle(), self._loop).result(timeout=30.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30.0)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def kill(self) -> None:
        self.stop()


class SimulatedLMServer:
    """A simulated OpenAI-compatible LM (a simulation, not a real model) that a test starts and stops.

    ``port=0`` picks a free port at the first start and keeps it for restarts. ``knobs`` are
    ``SimLMConfig`` fields: latency, jitter, rate, burst, fail, timeout_rate, hang_seconds,
    require_api_key, models, down_after, seed, log_size.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        in_process: bool = False,
        log_path: str | Path | None = None,
        startup_timeout: float = 30.0,
        **knobs: Any,
    ) -> None:
        self.host, self.port = host, port
        # The subprocess serves /admin on a listener of its own too (dspex.testing._admin: answered
        # promptly however many LM connections wait to be accepted); kept across restarts.
        self.admin_port: int | None = None
        self.config = SimLMConfig().updated(**knobs)
        # a log file this object makes is removed on close(); one the caller names is kept
        self._own_log: Path | None = None
        if in_process:
            self._backend: _Backend = _ThreadBackend(self.config)
        else:
            if log_path is None:
                handle, name = tempfile.mkstemp(prefix="dspex-sim-lm-", suffix=".log")
                os.close(handle)
                log_path = self._own_log = Path(name)
            self._backend = _SubprocessBackend(self.config, Path(log_path), startup_timeout)
        self._control: SimLMControl | None = None

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:8123``."""
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        """The root URL the admin client uses: the admin listener's when there is one."""
        return self.url if self.admin_port is None else f"http://{self.host}:{self.admin_port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API base, e.g. ``http://127.0.0.1:8123/v1``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self._backend.running

    @property
    def pid(self) -> int | None:
        """The subprocess id (None in process or when stopped)."""
        process = getattr(self._backend, "process", None)
        return process.pid if process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the subprocess writes its output (None in process)."""
        return getattr(self._backend, "log_path", None)

    @property
    def control(self) -> SimLMControl:
        """A client of the admin endpoints (stats, hold/release, reset, configure, requests)."""
        if self._control is None:
            self._control = SimLMControl(self.admin_url)
        return self._control

    def async_control(self) -> AsyncSimLMControl:
        """A new asynchronous admin client; ``await ctl.aclose()`` when done."""
        return AsyncSimLMControl(self.admin_url)

    def start(self) -> SimulatedLMServer:
        """Start serving and wait until ``/admin/stats`` answers."""
        if self.running:
            raise ConfigurationError(f"the simulated LM on port {self.port} is already running")
        self.port, self.admin_port = self._backend.start(self.host, self.port, self.admin_port or 0)
        self.control.wait_until(lambda _stats: True, timeout=10.0)
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM for a subprocess); a no-op when not running."""
        self._backend.stop()

    def kill(self) -> None:
        """Stop at once (SIGKILL for a subprocess)."""
        self._backend.kill()

    def restart(self) -> SimulatedLMServer:
        """Stop, then start again on the same port with the constructor's knobs."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server, close the admin client, and remove a log file this object made."""
        self.stop()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._own_log is not None:
            self._own_log.unlink(missing_ok=True)

    def __enter__(self) -> SimulatedLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

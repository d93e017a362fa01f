"""One Deno + Pyodide process and the host's side of its line protocol, with the limits enforced.

The host is the only place limits can be trusted: a thread reads the runner's stdout into a queue
(dropping lines longer than the bound), another keeps the tail of its stderr for error messages,
and the caller's thread waits on the queue in short slices, checking the wall-time budget and the
process's resident memory between slices. A limit hit kills the process; the error says which.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from dspex.sandbox.errors import (
    SandboxCrashError,
    SandboxError,
    SandboxMemoryError,
    SandboxStartupError,
    SandboxTimeoutError,
)
from dspex.sandbox.install import FIX, GUEST_PATH

__all__ = ["SandboxLimits", "SandboxProcess", "ToolHandler"]

logger = logging.getLogger(__name__)

ToolHandler = Callable[[str, dict[str, Any]], dict[str, Any]]

_POLL_S = 0.05
_STDERR_TAIL = 4096
# How long an exited process's stderr reader may take to read what is left in the pipe.
_STDERR_DRAIN_S = 1.0
_MAX_FOREIGN_LINES = 1000  # lines the code forged on stdout before the session counts as broken
_LOST = "the interpreter state was lost: create a new interpreter for a fresh session"
_EOF = object()
_OVERLONG = object()


class SandboxLimits(BaseModel):
    """Per-execution limits of one sandbox. Time spent in host tools does not count as wall time."""

    model_config = ConfigDict(frozen=True)

    timeout_s: float = Field(default=60.0, gt=0, description="wall time of one execute, else killed")
    memory_mb: int = Field(default=512, gt=0, description="RSS of the Deno process, else killed")
    output_chars: int = Field(default=1_000_000, gt=0, description="printed characters per execute")
    start_timeout_s: float = Field(default=120.0, gt=0, description="Deno + Pyodide start-up, cold")

    @property
    def max_line_bytes(self) -> int:
        # JSON may escape every character as \uXXXX (6 bytes), plus room for the envelope
        return 6 * self.output_chars + (1 << 20)


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` from /proc (Linux); None where /proc is absent."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return 0


def _read_stdout(pipe: IO[bytes], lines: queue.SimpleQueue[Any], max_line: int) -> None:
    with pipe:
        while True:
            line = pipe.readline(max_line + 1)
            if not line:
                break
            if len(line) > max_line and not line.endswith(b"\n"):
                lines.put(_OVERLONG)
                break  # the process is about to be killed; nothing after this is trusted
            lines.put(line)
    lines.put(_EOF)


def _read_stderr(pipe: IO[bytes], tail: deque[bytes]) -> None:
    with pipe:
        for chunk in iter(lambda: pipe.read(65536), b""):
            tail.append(chunk)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(OSError):  # a broken pipe to a dead process: nothing to flush
            process.stdin.close()


class SandboxProcess:
    """A started Deno runner. ``request`` sends one message and waits for its reply under the limits.

    Not thread-safe: its owner (a ``PythonInterpreter``) serialises calls.
    """

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, limits: SandboxLimits) -> None:
        self.command, self.limits = command, limits
        self.dead: SandboxError | None = None
        self.uses = 0  # sessions served (a pool reuses a process up to a bound)
        self.leased = False  # a pool's session holds it
        self._foreign = 0
        self._stderr: deque[bytes] = deque(maxlen=4)
        self._lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._process = self._spawn(command, env, cwd)
        self._finalizer = weakref.finalize(self, _kill, self._process)
        self._start_readers()

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self._process

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self.dead is None and self._process.poll() is None

    def rss_bytes(self) -> int | None:
        return _rss_bytes(self._process.pid)

    @staticmethod
    def _spawn(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=cwd, bufsize=0,
            )  # fmt: skip
        except OSError as exc:
            raise SandboxStartupError(f"cannot run {command[0]!r} ({exc}): {FIX}") from exc

    def _start_readers(self) -> None:
        assert self._process.stdout is not None and self._process.stderr is not None  # Popen(PIPE)
        name = f"sandbox-{self.pid}"
        threading.Thread(
            target=_read_stdout,
            args=(self._process.stdout, self._lines, self.limits.max_line_bytes),
            daemon=True,
            name=name,
        ).start()
        self._stderr_reader = threading.Thread(
            target=_read_stderr, args=(self._process.stderr, self._stderr), daemon=True, name=name
        )
        self._stderr_reader.start()

    def boot(self, config: dict[str, Any]) -> dict[str, Any]:
        """Send the guest code and configuration; wait for Pyodide to be ready (start-up limit)."""
        params = {"guest": GUEST_PATH.read_text(encoding="utf-8"), "config": config}
        try:
            return self.request("init", params, timeout_s=self.limits.start_timeout_s)
        except SandboxTimeoutError as exc:
            raise SandboxStartupError(
                f"the sandbox did not start within {self.limits.start_timeout_s:g} s{self._stderr_note()}"
            ) from exc
        except SandboxError as exc:
            raise SandboxStartupError(f"the sandbox failed to start: {exc}; {FIX}") from exc

    def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_tool_call: ToolHandler | None = None,
    ) -> dict[str, Any]:
        """Send ``method`` and return the runner's reply message (``result`` or ``error``)."""
        if self.dead is not None:
            raise self.dead
        request_id = secrets.token_hex(16)
        self._send({"id": request_id, "method": method, "params": params})
        budget = timeout_s if timeout_s is not None else self.limits.timeout_s
        return self._wait(request_id, budget, on_tool_call)

    def send(self, message: dict[str, Any]) -> None:
        """Write one protocol message to the runner (a reply the caller built itself)."""
        self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        stdin = self._process.stdin
        assert stdin is not None  # Popen(PIPE)
        try:
            stdin.write(json.dumps(message, allow_nan=False).encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self._fail(SandboxCrashError(f"the sandbox process stopped{self._exit_note()}"), exc)

    def _wait(self, request_id: str, budget: float, on_tool_call: ToolHandler | None) -> dict[str, Any]:
        deadline = time.monotonic() + budget
        while True:
            message = self._next_message(deadline, budget)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                self._check_memory()  # code that allocated and finished between two polls
                return message
            if message.get("method") == "tool_call" and str(message.get("id", "")).startswith(request_id):
                started = time.monotonic()
                self._answer_tool_call(message, on_tool_call)
                deadline += time.monotonic() - started  # the host's own time is not the code's
                continue
            self._foreign += 1
            if self._foreign > _MAX_FOREIGN_LINES:
                self._fail(SandboxCrashError("the sandbox wrote too many lines outside the protocol"))

    def _answer_tool_call(self, message: dict[str, Any], on_tool_call: ToolHandler | None) -> None:
        params = message.get("params") or {}
        if on_tool_call is None:
            reply: dict[str, Any] = {"error": {"type": "CodeInterpreterError", "message": "no tools here"}}
        else:
            reply = on_tool_call(str(params.get("name")), dict(params.get("kwargs") or {}))
        self._send({"id": message["id"], **reply})

    def _next_message(self, deadline: float, budget: float) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_limits(deadline, budget)
                continue
            if line is _EOF:
                self._process.wait()
                self._fail(SandboxCrashError(f"the sandbox process exited{self._exit_note()}"))
            if line is _OVERLONG:
                self._fail(SandboxCrashError("the sandbox sent a line past the output limit"))
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                return message
            self._foreign += 1  # a non-JSON line: the code wrote to the real stdout

    def _check_limits(self, deadline: float, budget: float) -> None:
        if time.monotonic() > deadline:
            self._fail(SandboxTimeoutError(f"the code ran past the {budget:g} s time limit; it was killed"))
        self._check_memory()

    def _check_memory(self) -> None:
        rss = self.rss_bytes()
        if rss is not None and rss > self.limits.memory_mb * 1024 * 1024:
            self._fail(
                SandboxMemoryError(
                    f"the sandbox used {rss // (1024 * 1024)} MB, past the {self.limits.memory_mb} MB "
                    "memory limit; it was killed"
                )
            )

    def _fail(self, error: SandboxError, cause: BaseException | None = None) -> Any:
        """Kill the process and raise ``error``; every later request raises it again."""
        _kill(self._process)
        if self.dead is None:
            error.args = (f"{error}; {_LOST}",)
            self.dead = error
        raise self.dead from cause

    def _exit_note(self) -> str:
        code = self._process.poll()
        if code is not None:
            # Its last words may still be in the pipe: stdout's end can be seen before stderr's
            # reader has read them (bounded: a child still holding the pipe must not stall us).
            self._stderr_reader.join(timeout=_STDERR_DRAIN_S)
        return (f" (exit code {code})" if code is not None else "") + self._stderr_note()

    def _stderr_note(self) -> str:
        tail = b"".join(self._stderr).decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
        return f"; stderr: {tail}" if tail else ""

    def close(self, grace_s: float = 2.0) -> None:
        """Ask the runner to exit, then kill it if it has not within ``grace_s``."""
        if self._process.poll() is None and self.dead is None:
            try:
                self._send({"id": "shutdown", "method": "shutdown"})
                self._process.stdin.close()  # type: ignore[union-attr]
                self._process.wait(timeout=grace_s)
            except (SandboxError, subprocess.TimeoutExpired, OSError):
                pass  # killed below
        _kill(self._process)
        self.dead = self.dead or SandboxCrashError("the sandbox was shut down")
        self._finalizer.detach()

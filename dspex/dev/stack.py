"""A local pipeline: `dspex worker ...` processes started and supervised from Python.

`dspex demo` and the end-to-end tests both need the same thing: a few worker processes of each
kind against one broker and one topic prefix, each logging to its own file, stoppable one by one
(SIGTERM, or SIGKILL to play a crash) and all together at the end.

    with LocalStack(bootstrap="127.0.0.1:9092", prefix="demo.", work_dir=tmp) as stack:
        stack.start("aggregate")
        stack.start("score")
        predictor = stack.start("predict", "--allow-api-base", sim.base_url)
        ...
        predictor.kill()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from dspex.errors import ConfigurationError

__all__ = ["LocalStack", "WorkerKind", "WorkerProcess"]

WorkerKind = Literal["predict", "score", "aggregate", "optimize", "intake", "provider-batch"]

STOP_TIMEOUT_S = 20.0


@dataclass
class WorkerProcess:
    """One `dspex worker KIND` process and the file its output goes to."""

    kind: WorkerKind
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, so the worker drains and commits; SIGKILL if it has not exited in ``timeout``."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no drain and no commit."""
        if self.alive:
            self.process.kill()
        self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the worker's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalStack:
    """Worker processes of a local pipeline; stops whatever it started on exit."""

    bootstrap: str
    prefix: str
    work_dir: Path
    fast_groups: bool = True
    env: Mapping[str, str] | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self, kind: WorkerKind, *extra_args: str) -> WorkerProcess:
        """Start one `dspex worker KIND` process with this stack's broker and prefix."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        name = f"{kind}-{sum(w.kind == kind for w in self.workers) + 1}"
        log_path = self.work_dir / f"{name}.log"
        command = self._command(kind, name, extra_args)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self._environment(), start_new_session=True
            )
        worker = WorkerProcess(kind, name, process, log_path)
        self.workers.append(worker)
        return worker

    def _command(self, kind: WorkerKind, name: str, extra_args: Sequence[str]) -> list[str]:
        command = [sys.executable, "-m", "dspex.cli", "worker", kind]
        command += ["--bootstrap", self.bootstrap, "--prefix", self.prefix, "--worker-id", name]
        if self.fast_groups:
            command.append("--fast-groups")
        if kind == "aggregate":
            command += ["--data-dir", str(self.work_dir / f"{name}-state")]
        command += ["--prometheus-targets-dir", str(self.work_dir / "prometheus-targets")]
        return [*command, *extra_args]

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        # a worker that dies of a signal leaves a Python traceback of every thread in its log
        environment.setdefault("PYTHONFAULTHANDLER", "1")
        environment.update(self.env or {})
        return environment

    def check_running(self) -> None:
        """Raise ConfigurationError naming the first worker that has exited, with the end of its log."""
        for worker in self.workers:
            if not worker.alive:
                raise ConfigurationError(
                    f"worker {worker.name} exited with code {worker.process.returncode}; "
                    f"its log ({worker.log_path}) ends with:\n{worker.log_tail()}"
                )

    def alive(self, kind: WorkerKind | None = None) -> list[WorkerProcess]:
        """The workers (of ``kind``) still running."""
        return [w for w in self.workers if w.alive and (kind is None or w.kind == kind)]

    def stop_all(self) -> None:
        """SIGTERM every worker, optimizers then predictors first, so that nothing waits on a stopped stage.

        The workers of one kind are signalled together: stopped one at a time, every departure
        would make the others of the group rebalance (and drain) once more before their own turn.
        """
        for kind in ("optimize", "predict", "score", "aggregate"):
            stopping = [w for w in self.workers if w.kind == kind and w.alive]
            for worker in stopping:
                worker.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for worker in stopping:
                try:
                    worker.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    worker.kill()
        for worker in self.workers:  # a kind not listed above, if one is ever added
            worker.stop()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

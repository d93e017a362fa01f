"""Sending :class:`~dspex.tracking.content.RunContent` to the tracking server, one run each, from a
background thread: an evaluation or compile hands its run over and goes on at once, so a slow or
unreachable server never holds up (or fails) what is being logged.

Runs are sent one after another, in the order they were handed over: a compile's run is created
before its candidate evaluations (its children) are sent, and a run opened with
:meth:`MlflowLogger.start` gets its progress points (:meth:`MlflowLogger.log_points`, one
``log_batch`` each) in order too. A failure leaves that run as far as it got,
``dspex_mlflow_export_errors_total`` counts it, and a warning names the server and the reason (at
most once a minute per logger, so an outage does not flood the log). :meth:`MlflowLogger.check` is
the start-up check, which fails loudly instead. :meth:`MlflowLogger.flush` waits until what was
handed over is sent (tests, the CLI at exit).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter

from dspex.errors import ConfigurationError, DspexError
from dspex.tracking.content import MetricPoint, RunContent
from dspex.tracking.settings import MlflowSettings

if TYPE_CHECKING:
    from dspex.tracking.client import TrackingClient

__all__ = ["EXPORT_ERRORS", "MlflowLogger", "RunRef", "TrackingFailure"]

logger = logging.getLogger("dspex.tracking")

EXPORT_ERRORS: Final = Counter(
    "dspex_mlflow_export_errors",
    "Runs (evaluations, optimizations) and progress points that could not be logged to MLflow.",
)

_WARN_EVERY_S: Final = 60.0
# run, params and metrics, the run's artifact URI, two artifacts, end (the experiment once)
_REQUESTS_PER_RUN: Final = 7
_TRIES: Final = 3  # of an idempotent request (artifacts, the run's end), 1 s then 2 s apart


class TrackingFailure(DspexError):
    """A request to the tracking server (or its artifact store) that failed (caught here: a
    warning, never a failed evaluation)."""


@dataclass
class RunRef:
    """A run handed over to the sender: its id once the server made it (None until then, and for
    good if that failed), and the last step of each metric it holds (a point at that step or an
    earlier one is not sent again: a resumed optimization repeats the trials of its checkpoint)."""

    run_id: str | None = None
    last_steps: dict[str, int] = field(default_factory=dict)

    def unsent(self, points: Sequence[MetricPoint]) -> list[MetricPoint]:
        """The points of ``points`` past the run's last step of their metric (recorded as sent)."""
        fresh = [point for point in points if point.step > self.last_steps.get(point.key, -1)]
        for point in fresh:
            self.last_steps[point.key] = max(point.step, self.last_steps.get(point.key, -1))
        return fresh


class MlflowLogger:
    """Logs runs into ``settings.experiment`` on ``settings.tracking_uri``."""

    def __init__(self, settings: MlflowSettings) -> None:
        self.settings = settings
        self._client = _client(settings)
        self._experiment_id: str | None = None
        self._lock = threading.Lock()
        # the sender: one daemon thread (an exit never waits on it beyond close()'s bound)
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._sent = threading.Condition()
        self._handed_over = self._done = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_warning = -_WARN_EVERY_S
        self.failures = 0

    def close(self, timeout_s: float | None = None) -> None:
        """Send what was handed over (for at most ``timeout_s``, default the request timeout times
        the requests of one run) and drop the rest."""
        bound = _REQUESTS_PER_RUN * self.settings.timeout_s if timeout_s is None else timeout_s
        if not self.flush(bound):
            with self._sent:
                dropped = self._handed_over - self._done
            EXPORT_ERRORS.inc(dropped)
            logger.warning(
                "%d MLflow update(s) (runs, progress points, ends) not sent to %s within %.0f s: dropped",
                dropped, self.settings.tracking_uri, bound,
            )  # fmt: skip
        with self._sent:
            self._closed = True
        self._queue.put(None)

    def check(self) -> None:
        """Reach the server and find (or create) the experiment; a one-line ConfigurationError
        naming the tracking URI when that fails."""
        try:
            self._experiment()
        except TrackingFailure as exc:
            raise ConfigurationError(
                f"MLflow tracking URI {self.settings.tracking_uri} cannot be used: {exc}"
            ) from None

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every run handed over so far was sent (or failed); False on ``timeout_s``."""
        with self._sent:
            target = self._handed_over
            return self._sent.wait_for(lambda: self._done >= target, timeout_s)

    # -- handing runs over -------------------------------------------------------------------------

    def start(
        self, content: RunContent, parent: RunRef | None = None, resume: Mapping[str, str] | None = None
    ) -> RunRef:
        """Open the run of ``content`` (RUNNING, nothing logged yet) as a child of ``parent``; it
        is completed by a later :meth:`log` with ``run=`` this reference. With ``resume`` (tags),
        the oldest run of the experiment with those tags is continued instead when there is one
        (an optimization another worker began): its metrics go on after their last steps."""
        ref = RunRef()
        self._hand_over(lambda: self._start_now(content, parent, ref, resume))
        return ref

    def log_points(self, run: RunRef, points: Sequence[MetricPoint], kind: str = "progress") -> None:
        """Add ``points`` to the opened ``run`` (one batch; nothing when its opening failed)."""
        self._hand_over(lambda: self._points_now(run, list(points), kind))

    def end(self, run: RunRef, failed: bool = True) -> None:
        """End the opened ``run`` with nothing more logged (what it was opened for went wrong)."""
        self._hand_over(lambda: self._end_now(run, failed))

    def log(self, content: RunContent, parent: RunRef | None = None, run: RunRef | None = None) -> None:
        """Log ``content`` as one run (into ``run`` when it was opened with :meth:`start`, else a
        new one, a child of ``parent``) and end it."""
        self._hand_over(lambda: self._log_now(content, parent, run))

    def _hand_over(self, send: Callable[[], None]) -> None:
        with self._sent:
            if self._closed:  # configure(mlflow=None) raced this run: nothing to log to
                return
            self._handed_over += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="dspex-mlflow", daemon=True)
                self._thread.start()
        self._queue.put(send)

    def _drain(self) -> None:
        while (send := self._queue.get()) is not None:
            try:
                send()
            except Exception:  # a bug or a closed connection: the sender must outlive it
                logger.warning("MLflow logging failed", exc_info=True)
            with self._sent:
                self._done += 1
                self._sent.notify_all()

    # -- on the sender thread ----------------------------------------------------------------------

    def _start_now(
        self, content: RunContent, parent: RunRef | None, ref: RunRef, resume: Mapping[str, str] | None
    ) -> None:
        try:
            experiment = self._experiment()
            found = self._client.find_run(experiment, resume) if resume else None
            if found is not None:
                ref.last_steps.update(self._client.resume_run(found))
                ref.run_id = found
                return
            tags = {**_tags(content, parent), **(resume or {})}
            ref.run_id = self._client.create_run(experiment, self._name(content), tags)
        except TrackingFailure as exc:
            self._warn(content.kind, exc)

    def _points_now(self, ref: RunRef, points: list[MetricPoint], kind: str) -> None:
        if ref.run_id is None:
            return  # its opening failed, and said so
        try:
            self._client.log_batch(ref.run_id, {}, ref.unsent(points))
        except TrackingFailure as exc:
            self._warn(kind, exc)

    def _end_now(self, ref: RunRef, failed: bool) -> None:
        if ref.run_id is None:
            return
        try:
            _again(lambda: self._client.finish_run(str(ref.run_id), "FAILED" if failed else "FINISHED"))
        except TrackingFailure as exc:
            self._warn("run's end", exc)

    def _log_now(self, content: RunContent, parent: RunRef | None, ref: RunRef | None) -> None:
        if ref is not None and ref.run_id is None:
            return  # its opening failed, and said so
        try:
            run_id = (
                ref.run_id
                if ref is not None and ref.run_id is not None
                else self._client.create_run(self._experiment(), self._name(content), _tags(content, parent))
            )
            metrics = content.metrics if ref is None else ref.unsent(content.metrics)
            self._client.log_batch(run_id, content.params, metrics)
            # the two steps a repeat cannot double: on a loaded server an upload may time out once
            _again(lambda: self._client.log_artifacts(run_id, content.artifacts))
            _again(lambda: self._client.finish_run(run_id, "FAILED" if content.failed else "FINISHED"))
        except TrackingFailure as exc:
            self._warn(content.kind, exc)

    def _name(self, content: RunContent) -> str:
        return self.settings.run_name or content.name

    def _experiment(self) -> str:
        with self._lock:
            known = self._experiment_id
        if known is None:
            known = self._client.experiment_id(self.settings.experiment)
            with self._lock:
                self._experiment_id = known
        return known

    def _warn(self, kind: str, exc: TrackingFailure) -> None:
        self.failures += 1
        EXPORT_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            logger.warning("the %s was not logged to MLflow (%d so far): %s", kind, self.failures, exc)


def _client(settings: MlflowSettings) -> TrackingClient:
    # MLflow is imported here, when logging is turned on, never by `import dspex`
    try:
        from dspex.tracking.client import TrackingClient
    except ImportError as exc:
        raise ConfigurationError(
            f"MLflow tracking needs the mlflow extra (pip install 'dspex[mlflow]'): {exc}"
        ) from None
    return TrackingClient(settings.tracking_uri, settings.timeout_s)


def _tags(content: RunContent, parent: RunRef | None) -> dict[str, str]:
    tags = dict(content.tags)
    if parent is not None and parent.run_id is not None:
        tags["mlflow.parentRunId"] = parent.run_id
    return tags


def _again(step: Callable[[], None]) -> None:
    """``step``, tried up to :data:`_TRIES` times while it fails (the last failure is raised)."""
    for attempt in range(1, _TRIES + 1):
        try:
            step()
            return
        except TrackingFailure:
            if attempt == _TRIES:
                raise
            time.sleep(attempt)

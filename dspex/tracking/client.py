"""The tracking server, through MLflow's own client (``mlflow-skinny``, the ``mlflow`` extra).

Imported only once MLflow logging is turned on: importing MLflow takes seconds, which ``import
dspex`` must not pay. Runs, params, metrics and tags go through ``MlflowClient``; artifacts through
whatever artifact store the run's artifact URI names (the server's proxy, S3, GCS, ... as far as
the installed client supports it).

MLflow's client reads its request timeout and retry count only from the environment
(``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), so :class:`TrackingClient`
sets both for this process: one request takes at most the settings' timeout, and a failed one is
not retried (its default of 7 retries with backoff would hold a failing run, and the start-up
check of an unreachable server, for minutes). It also sets
``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``: MLflow prints a link to stdout when a run ends, and
dspex's stdout is the user's (``dspex eval --json`` prints its result there).
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import requests
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dspex.tracking.content import MetricPoint
from dspex.tracking.logger import TrackingFailure

__all__ = ["TrackingClient"]

TIMEOUT_VARIABLE: Final = "MLFLOW_HTTP_REQUEST_TIMEOUT"
RETRIES_VARIABLE: Final = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
QUIET_VARIABLE: Final = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
_MAX_MESSAGE_CHARS: Final = 400


class TrackingClient:
    """MLflow's client of one tracking server (``uri``), each request bounded by ``timeout_s``.
    Every failure is a :class:`TrackingFailure` naming the server."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        # MLflow reads these at every request; its timeout is a whole number of seconds
        os.environ[TIMEOUT_VARIABLE] = str(max(1, math.ceil(timeout_s)))
        os.environ[RETRIES_VARIABLE] = "0"
        os.environ[QUIET_VARIABLE] = "true"
        self.uri = uri
        self._client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        with self._failures():
            found = self._client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            try:
                return str(self._client.create_experiment(name))
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # another process created it between the two requests
            again = self._client.get_experiment_by_name(name)
            if again is None:
                raise TrackingFailure(f"MLflow at {self.uri} neither has nor creates experiment {name!r}")
            return str(again.experiment_id)

    def create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        """A new run (RUNNING) in ``experiment_id``; its id."""
        with self._failures():
            run = self._client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
        return str(run.info.run_id)

    def find_run(self, experiment_id: str, tags: Mapping[str, str]) -> str | None:
        """The oldest run of ``experiment_id`` with every one of ``tags``; None when there is none."""
        condition = " and ".join(f"tags.`{key}` = '{_quoted(value)}'" for key, value in tags.items())
        with self._failures():
            found = self._client.search_runs(
                [experiment_id], condition, order_by=["attributes.start_time ASC"], max_results=1
            )
        return str(found[0].info.run_id) if found else None

    def resume_run(self, run_id: str) -> dict[str, int]:
        """Mark ``run_id`` RUNNING again (if it ended) and say the last step of each of its metrics."""
        with self._failures():
            run = self._client.get_run(run_id)
            if run.info.status != "RUNNING":
                self._client.update_run(run_id, status="RUNNING")
            return {
                key: max((point.step for point in self._client.get_metric_history(run_id, key)), default=0)
                for key in run.data.metrics
            }

    def log_batch(self, run_id: str, params: Mapping[str, str], metrics: Sequence[MetricPoint]) -> None:
        """Log ``params`` and ``metrics`` (MLflow's client splits them to its batch limits)."""
        now = _now_ms()
        points = [Metric(m.key, m.value, m.timestamp_ms or now, m.step) for m in metrics]
        entries = [Param(key, value) for key, value in params.items()]
        if not points and not entries:
            return
        with self._failures():
            self._client.log_batch(run_id, metrics=points, params=entries, synchronous=True)

    def log_artifacts(self, run_id: str, artifacts: Mapping[str, bytes]) -> None:
        """Put each of ``artifacts`` (path -> bytes) among the run's artifacts."""
        if not artifacts:
            return
        with tempfile.TemporaryDirectory(prefix="dspex-mlflow-") as folder, self._failures():
            for path, data in artifacts.items():
                target = Path(folder, path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                parent = posixpath.dirname(path)
                self._client.log_artifact(run_id, str(target), parent or None)
            # A finished CLI run was once seen with none of its artifacts and no error: check the
            # server holds each, so that a miss is retried (the caller repeats) and then reported.
            held = {info.path for info in self._client.list_artifacts(run_id)}
            missing = sorted(path for path in artifacts if posixpath.dirname(path) == "" and path not in held)
            if missing:
                raise TrackingFailure(f"MLflow at {self.uri} lacks the artifacts {missing} of run {run_id}")

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End ``run_id`` as ``status`` (FINISHED or FAILED)."""
        with self._failures():
            self._client.set_terminated(run_id, status=status)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except TrackingFailure:
            raise
        except (MlflowException, requests.RequestException, OSError) as exc:
            raise TrackingFailure(f"MLflow tracking server {self.uri}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _quoted(value: str) -> str:
    """``value`` inside a single-quoted string of MLflow's search syntax."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _now_ms() -> int:
    return int(time.time() * 1000)

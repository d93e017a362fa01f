"""A worker's /metrics endpoint, and its entry for Prometheus file-based service discovery.

Each worker serves prometheus_client's registry on ``--metrics-port`` or, when none is given, on the
first free port of a range (9400-9499), so that several workers on one host never collide. It binds
to 127.0.0.1 unless ``--metrics-host`` says otherwise. So that Prometheus finds whatever ports were
picked, the worker writes a target file into a directory Prometheus watches (``file_sd_configs``)::

    [{"targets": ["127.0.0.1:9401"], "labels": {"kind": "predict", "worker_id": "predict-host-123"}}]

and removes it when it stops. A Prometheus job for that directory::

    - job_name: dspex
      file_sd_configs: [{files: ["~/.cache/dspex/prometheus/targets/*.json"]}]

    >>> server = MetricsServer(kind="predict", worker_id="w1")
    >>> server.start().url   # doctest: +SKIP
    'http://127.0.0.1:9400/metrics'
    >>> server.stop()        # doctest: +SKIP
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import tempfile
import threading
from pathlib import Path
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from dspex.errors import ConfigurationError

__all__ = [
    "DEFAULT_METRICS_HOST",
    "DEFAULT_PORT_RANGE",
    "DEFAULT_TARGETS_DIR",
    "MetricsServer",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS_HOST: Final = "127.0.0.1"
DEFAULT_PORT_RANGE: Final = range(9400, 9500)
DEFAULT_TARGETS_DIR: Final = Path("~/.cache/dspex/prometheus/targets")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class MetricsServer:
    """Serves one registry over HTTP and registers the target for Prometheus (see module docs)."""

    def __init__(
        self,
        *,
        kind: str,
        worker_id: str,
        host: str = DEFAULT_METRICS_HOST,
        port: int | None = None,
        port_range: range = DEFAULT_PORT_RANGE,
        targets_dir: str | Path | None = DEFAULT_TARGETS_DIR,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        """``port``: a fixed port (in use -> ConfigurationError), else the first free one of
        ``port_range``. ``targets_dir``: where the discovery file goes (None: write none)."""
        self.kind = kind
        self.worker_id = worker_id
        self.host = host
        self.port = port
        self.port_range = port_range
        self.targets_dir = Path(targets_dir).expanduser() if targets_dir is not None else None
        self.registry = registry
        self.target_file: Path | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The /metrics URL Prometheus (and people) should use."""
        return f"http://{self._target()}/metrics"

    def start(self) -> MetricsServer:
        """Bind, serve in a background thread, and write the discovery file."""
        self._server, self._thread = self._bind()
        if self.targets_dir is not None:
            self.target_file = self._write_target(self.targets_dir)
        logger.info("metrics of %s %s at %s", self.kind, self.worker_id, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and remove the discovery file (safe to call twice)."""
        if self.target_file is not None:
            self.target_file.unlink(missing_ok=True)
            self.target_file = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> tuple[WSGIServer, threading.Thread]:
        if self.port is not None:
            return self._bind_fixed(self.port)
        for port in self.port_range:
            try:
                served = start_http_server(port, addr=self.host, registry=self.registry)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise ConfigurationError(f"cannot serve metrics on {self.host}:{port}: {exc}") from exc
            self.port = port
            return served
        raise ConfigurationError(
            f"no free metrics port on {self.host} in {self.port_range.start}-{self.port_range.stop - 1}; "
            "pass --metrics-port PORT"
        )

    def _bind_fixed(self, port: int) -> tuple[WSGIServer, threading.Thread]:
        try:
            return start_http_server(port, addr=self.host, registry=self.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"metrics port {port} on {self.host} is already in use; pass another --metrics-port "
                    "or leave it out to pick a free one"
                ) from exc
            raise ConfigurationError(f"cannot serve metrics on {self.host}:{port}: {exc}") from exc

    def _target(self) -> str:
        # A wildcard bind is reachable under the machine's name, not under 0.0.0.0.
        host = socket.gethostname() if self.host in _WILDCARD_HOSTS else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    def _write_target(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        entry = [{"targets": [self._target()], "labels": {"kind": self.kind, "worker_id": self.worker_id}}]
        path = directory / f"{_UNSAFE_FILE_CHARS.sub('_', self.worker_id)}.json"
        # Written to a temporary file and renamed: Prometheus must never read half a file.
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(entry, file)
        os.replace(temp, path)
        return path

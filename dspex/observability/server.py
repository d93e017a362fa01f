"""A worker's /metrics, /healthz and /readyz, and its entry for Prometheus file-based discovery.

Each worker serves prometheus_client's registry on ``--metrics-port`` or, when none is given, on the
first free port of a range (9400-9499), so that several workers on one host never collide. It binds
to 127.0.0.1 unless ``--metrics-host`` says otherwise. So that Prometheus finds whatever ports were
picked, the worker writes a target file into a directory Prometheus watches (``file_sd_configs``)::

    [{"targets": ["127.0.0.1:9401"],
      "labels": {"kind": "predict", "worker_id": "predict-host-123-1a2b3c", "prefix": "dspex.",
                 "__param_worker": "predict-host-123-1a2b3c"}}]

(mode 0644: Prometheus's image runs as ``nobody``) and removes it when it stops. A Prometheus job
for that directory::

    - job_name: dspex
      file_sd_configs: [{files: ["~/.cache/dspex/prometheus/targets/*.json"]}]

Ports are picked afresh on every start, so a process that starts after a worker died may take
the dead one's port. Two things keep the dead worker's ``up`` series from flapping back to 1 (and
restarting ``DspexWorkerDown``'s timer) when that happens:

- every scrape names the worker it expects (``?worker=ID``, from the ``__param_worker`` label) and
  a server that is another worker answers 404, so the dead worker's target stays down;
- every answer carries ``X-Dspex-Worker: ID``, and a worker that starts sweeps the folder in the
  background: a target file whose address answers as another worker, or (a loopback address)
  refuses the connection, belongs to a process that is gone and is removed. A file whose address
  does not resolve or does not answer is kept: it may be another host's or container's, which
  this process cannot see. The folder is shared by every run on the host (its target files carry
  the ``prefix`` label to tell runs apart), so this sweep is what keeps it free of stale files.

The same port answers ``/healthz`` and ``/readyz`` (200 or 503, one line of text saying why), for a
kubelet's probes or a load balancer: what they mean is in :mod:`dspex.observability.health`. Every
other path serves the metrics, as prometheus_client does.

    >>> server = MetricsServer(kind="predict", worker_id="w1")
    >>> server.start().url   # doctest: +SKIP
    'http://127.0.0.1:9400/metrics'
    >>> server.stop()        # doctest: +SKIP
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Final
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from dspex.errors import ConfigurationError
from dspex.observability.health import Health, Verdict

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
WORKER_HEADER: Final = "X-Dspex-Worker"
"""The response header naming the worker that answered (how a sweep tells a stale target)."""
_WORKER_PARAM: Final = "worker"
_TARGET_MODE: Final = 0o644  # Prometheus may run as another user (the image's ``nobody``)
_SWEEP_TIMEOUT_S: Final = 1.0


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
        health: Health | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """``port``: a fixed port (in use -> ConfigurationError), else the first free one of
        ``port_range``. ``targets_dir``: where the discovery file goes (None: write none).
        ``health``: what /healthz and /readyz answer (default: a new :class:`Health`, which the
        worker attaches to its loop once it runs). ``labels``: more target labels (``prefix``)."""
        self.kind = kind
        self.worker_id = worker_id
        self.labels = dict(labels or {})
        self.host = host
        self.port = port
        self.port_range = port_range
        self.targets_dir = Path(targets_dir).expanduser() if targets_dir is not None else None
        self.registry = registry
        self.health = health if health is not None else Health()
        self.target_file: Path | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The /metrics URL Prometheus (and people) should use."""
        return f"http://{self._target()}/metrics"

    def start(self) -> MetricsServer:
        """Bind, serve in a background thread, and write the discovery file."""
        self._server, self._thread = self._bind()
        if self.targets_dir is not None:
            self.target_file = self._write_target(self.targets_dir)
            self._sweeper = threading.Thread(
                target=sweep_stale_targets,
                args=(self.targets_dir, self.target_file),
                name="dspex-targets-sweep",
                daemon=True,
            )
            self._sweeper.start()
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
                served = self._serve(port)
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
            return self._serve(port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"metrics port {port} on {self.host} is already in use; pass another --metrics-port "
                    "or leave it out to pick a free one"
                ) from exc
            raise ConfigurationError(f"cannot serve metrics on {self.host}:{port}: {exc}") from exc

    def _serve(self, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Bind ``port`` (OSError when taken) and serve from a daemon thread."""
        family = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
        app = _routes(make_wsgi_app(self.registry), self.health, self.worker_id)
        server: WSGIServer = make_server(self.host, port, app, server_class, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name=f"dspex-metrics-{port}", daemon=True)
        thread.start()
        return server, thread

    def _target(self) -> str:
        host = advertised_host() if self.host in _WILDCARD_HOSTS else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    def _write_target(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        labels = {**self.labels, "kind": self.kind, "worker_id": self.worker_id}
        # Prometheus turns __param_* labels into the scrape URL's query: ?worker=ID (see module docs)
        labels[f"__param_{_WORKER_PARAM}"] = self.worker_id
        entry = [{"targets": [self._target()], "labels": labels}]
        path = directory / f"{_UNSAFE_FILE_CHARS.sub('_', self.worker_id)}.json"
        # Written to a temporary file and renamed: Prometheus must never read half a file.
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(entry, file)
            # mkstemp makes the file 0600, unreadable to a Prometheus running as another user
            os.fchmod(file.fileno(), _TARGET_MODE)
        os.replace(temp, path)
        return path


def advertised_host() -> str:
    """The name Prometheus should scrape a wildcard-bound server under: the address this host's
    name resolves to, unless that is a loopback one (then the name itself).

    Replicas of one compose service share their hostname (and the service's DNS name picks any
    of them); the address Docker maps the hostname to in each container's /etc/hosts is that
    replica's own.
    """
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return name
    return name if ipaddress.ip_address(address).is_loopback else address


def sweep_stale_targets(directory: Path, own: Path | None = None) -> list[Path]:
    """Remove the target files in ``directory`` whose worker is certainly gone; returns them.

    Gone: its address answers as another worker (``X-Dspex-Worker``), or is a loopback address
    that refuses connections. Anything else (no answer, no such host, not a dspex server) is kept.
    """
    removed = []
    for path in sorted(directory.glob("*.json")):
        if path == own:
            continue
        try:
            (entry,) = json.loads(path.read_text(encoding="utf-8"))
            worker, targets = entry["labels"]["worker_id"], list(entry["targets"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or being written: leave it alone
        if targets and all(_target_is_stale(target, str(worker)) for target in targets):
            path.unlink(missing_ok=True)
            removed.append(path)
            logger.info("removed the stale Prometheus target %s (worker %s is gone)", path.name, worker)
    return removed


def _target_is_stale(target: str, worker: str) -> bool:
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    connection = http.client.HTTPConnection(host, int(port), timeout=_SWEEP_TIMEOUT_S)
    try:
        connection.request("GET", "/healthz")
        answered = connection.getresponse().getheader(WORKER_HEADER)
    except ConnectionRefusedError:
        return _is_loopback(host)
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        connection.close()
    return answered is not None and answered != worker


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # a slow scrape never holds up a probe; request threads die with the process
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds are not worth a log line each."""


def _routes(metrics: _WSGIApp, health: Health, worker_id: str) -> _WSGIApp:
    """/healthz and /readyz from ``health``; every other path to the metrics app, unless the
    request names another worker (404). Every answer names this worker."""
    probes: dict[str, Callable[[], Verdict]] = {"/healthz": health.live, "/readyz": health.ready}
    signed = [(WORKER_HEADER, worker_id)]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def respond(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            return start_response(status, [*headers, *signed], *args)

        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            expected = parse_qs(environ.get("QUERY_STRING", "")).get(_WORKER_PARAM, [worker_id])
            if worker_id not in expected:
                answer = f"this port serves worker {worker_id}, not {expected[0]}"
                return _text(respond, "404 Not Found", answer)
            return metrics(environ, respond)
        verdict = probe()
        status = "200 OK" if verdict.ok else "503 Service Unavailable"
        return _text(respond, status, f"{'ok' if verdict.ok else 'not ok'}: {verdict.detail}")

    return app


def _text(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
    return [f"{text}\n".encode()]

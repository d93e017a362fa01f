"""The project's development broker: one Apache Kafka node in KRaft mode, from Maven Central's jars.

Nothing here needs Docker or a Kafka download: ``mvn dependency:copy-dependencies`` copies the jars
named by the packaged ``kafka-pom.xml`` (the same file as ``infra/kafka/pom.xml``) into a cache
folder once, and ``java -cp 'libs/*' kafka.Kafka server.properties`` runs the broker detached from
the calling process, with its pid recorded in the data directory so that any later process can
find and stop it.

Example::

    broker = DevBroker(port=9092)
    broker.start()            # fetches the jars once, formats storage once, waits for metadata
    print(broker.status())    # BrokerStatus(state='running', pid=..., ...)
    broker.stop()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from dspex.dev._system import (
    HOST,
    file_lock,
    free_port,
    is_kafka_process,
    new_cluster_id,
    port_free,
    require_tool,
    tail,
)
from dspex.dev.probe import probe_metadata
from dspex.errors import BrokerUnavailableError, DevBrokerError

__all__ = [
    "BrokerState",
    "BrokerStatus",
    "DevBroker",
    "default_cache_dir",
    "default_data_dir",
    "kafka_version",
]

logger = logging.getLogger(__name__)

POM_RESOURCE = "kafka-pom.xml"
LOG_CONFIG_RESOURCE = "kafka-log4j2.properties"
_POM_NS = "{http://maven.apache.org/POM/4.0.0}"
_FETCHED_MARKER = ".dspex-fetched"
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

BrokerState = Literal["running", "unresponsive", "stopped"]


@dataclass(frozen=True)
class BrokerStatus:
    """What ``DevBroker.status()`` found: ``unresponsive`` means our process lives but does not answer."""

    state: BrokerState
    pid: int | None
    bootstrap: str
    data_dir: Path
    kafka_version: str

    @property
    def running(self) -> bool:
        return self.state == "running"


# --------------------------------------------------------------------------------------------
# Packaged files and default locations
# --------------------------------------------------------------------------------------------


def _resource_text(name: str) -> str:
    return resources.files("dspex.dev").joinpath(name).read_text(encoding="utf-8")


@cache
def kafka_version() -> str:
    """The Kafka version the packaged pom names (its ``kafka.version`` property)."""
    root = ET.fromstring(_resource_text(POM_RESOURCE))
    version = root.findtext(f"{_POM_NS}properties/{_POM_NS}kafka.version")
    if not version:
        raise DevBrokerError(f"the packaged {POM_RESOURCE} names no kafka.version property")
    return version.strip()


def default_cache_dir() -> Path:
    """Where the jars are copied once: ``~/.cache/dspex/kafka/<version>``."""
    return Path.home() / ".cache" / "dspex" / "kafka" / kafka_version()


def default_data_dir(port: int) -> Path:
    """A dev broker's default data directory: ``~/.cache/dspex/broker-<port>``."""
    return Path.home() / ".cache" / "dspex" / f"broker-{port}"


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


class DevBroker:
    """One single-node KRaft Kafka broker on 127.0.0.1, owned through its data directory.

    Everything about a running broker lives in ``data_dir`` (pid file, ``server.properties``,
    storage, ``broker.log``), so ``start``/``stop``/``status`` work from any process.
    ``heap`` is the JVM's ``-Xmx``; ``group_min_session_timeout_ms`` lets clients use the
    design's short session timeouts; ``notify`` receives one-line progress messages (the CLI
    prints them) for the slow first fetch. ``sasl_plain=(user, password)`` makes the client
    listener SASL_PLAINTEXT with the PLAIN mechanism and that one user (tests of authentication).
    """

    def __init__(
        self,
        *,
        port: int = 9092,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        heap: str = "512m",
        startup_timeout: float = 60.0,
        group_min_session_timeout_ms: int = 1000,
        notify: Callable[[str], None] | None = None,
        sasl_plain: tuple[str, str] | None = None,
    ) -> None:
        self.port = port
        self.sasl_plain = sasl_plain
        self.data_dir = Path(data_dir or default_data_dir(port)).expanduser().resolve()
        self.cache_dir = Path(cache_dir or default_cache_dir()).expanduser().resolve()
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.group_min_session_timeout_ms = group_min_session_timeout_ms
        self._notify = notify or (lambda message: None)
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"DevBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "dspex-broker.json"

    @property
    def _properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _storage_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def _console_file(self) -> Path:
        return self.data_dir / "broker.out"

    # ---- fetch -------------------------------------------------------------------------------

    def is_fetched(self) -> bool:
        """Whether the jars are already in the cache folder."""
        # a cache fetched before the pom named kafka-tools lacks the console tools: fetched again
        tools = self.libs_dir / f"kafka-tools-{kafka_version()}.jar"
        return (self.libs_dir / _FETCHED_MARKER).is_file() and tools.is_file()

    def fetch(self) -> Path:
        """Copy Kafka's jars from Maven Central into the cache folder, once; returns the libs folder."""
        with file_lock(self.cache_dir / ".lock"):
            if not self.is_fetched():
                self._copy_dependencies()
            self._write_log_config()
        return self.libs_dir

    def _copy_dependencies(self) -> None:
        mvn = require_tool("mvn")
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.cache_dir))
        try:
            pom = staging / "pom.xml"
            pom.write_text(_resource_text(POM_RESOURCE), encoding="utf-8")
            self._run_maven(mvn, pom, staging / "libs")
            (staging / "libs" / _FETCHED_MARKER).write_text(kafka_version(), encoding="utf-8")
            if self.libs_dir.is_dir():
                # jars only added: a broker running from this folder keeps every jar it has
                for jar in sorted((staging / "libs").iterdir()):
                    if not (self.libs_dir / jar.name).exists() or jar.name == _FETCHED_MARKER:
                        shutil.copy2(jar, self.libs_dir / jar.name)
            else:
                (staging / "libs").rename(self.libs_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _run_maven(self, mvn: str, pom: Path, output: Path) -> None:
        command = [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={output}"]
        command += ["-DincludeScope=runtime", "-f", str(pom)]
        logger.info("fetching Kafka %s jars into %s", kafka_version(), self.libs_dir)
        self._notify(f"fetching Kafka {kafka_version()} jars from Maven Central into {self.libs_dir} (once)")
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DevBrokerError("Maven did not finish copying the Kafka jars within 15 minutes") from exc
        if done.returncode != 0 or not any(output.glob("kafka_*.jar")):
            detail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise DevBrokerError(f"Maven could not copy the Kafka {kafka_version()} jars:\n{detail}")

    def _write_log_config(self) -> Path:
        target = self.cache_dir / "log4j2.properties"
        text = _resource_text(LOG_CONFIG_RESOURCE)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        return target

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """Whether the broker of this data directory runs and answers a metadata request."""
        pid = self._read_pid()
        if pid is None or not is_kafka_process(pid):
            return self._status("stopped", None)
        return self._status("running" if self._answers() else "unresponsive", pid)

    def _status(self, state: BrokerState, pid: int | None) -> BrokerStatus:
        return BrokerStatus(state, pid, self.bootstrap, self.data_dir, kafka_version())

    @property
    def client_config(self) -> dict[str, str]:
        """librdkafka security settings a client of this broker needs (empty for PLAINTEXT)."""
        if self.sasl_plain is None:
            return {}
        user, password = self.sasl_plain
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": user,
            "sasl.password": password,
        }

    def _answers(self, timeout: float = 3.0) -> bool:
        try:
            probe_metadata(self.bootstrap, config=self.client_config, timeout=timeout)
        except BrokerUnavailableError:
            return False
        return True

    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    # ---- start -------------------------------------------------------------------------------

    def start(self) -> bool:
        """Start the broker and wait until it answers; False when it was already running.

        Raises ``DevBrokerError`` when a port is taken by something else, when Java or Maven is
        missing, or when the broker does not answer within ``startup_timeout`` (with its log tail).
        """
        with file_lock(self.data_dir / ".lock"):
            current = self.status()
            if current.pid is not None:
                self._check_same_port(current.pid)
            if current.state == "running":
                return False
            if current.state == "unresponsive" and current.pid is not None:
                self._wait_ready(current.pid)  # ours and alive: most likely still starting
                return False
            self._pid_file.unlink(missing_ok=True)
            self._launch()
            return True

    def _launch(self) -> None:
        self._check_port_free()
        java = require_tool("java")
        libs = self.fetch()
        self._prepare(java, libs)
        pid = self._spawn(java, libs)
        try:
            self._wait_ready(pid)
        except DevBrokerError:
            self._terminate(pid, timeout=10.0)
            self._pid_file.unlink(missing_ok=True)
            raise

    def _check_same_port(self, pid: int) -> None:
        recorded = self._load_state().get("port", self.port)
        if recorded != self.port:
            raise DevBrokerError(
                f"the dev broker of {self.data_dir} already runs on {HOST}:{recorded} (pid {pid}); "
                f"use --port {recorded}, or stop it first"
            )

    def _check_port_free(self) -> None:
        if port_free(self.port):
            return
        if self._answers(timeout=2.0):
            raise DevBrokerError(
                f"{self.bootstrap} is already taken by a Kafka broker that was not started from "
                f"{self.data_dir}; use it with --bootstrap {self.bootstrap}, or pick another --port"
            )
        raise DevBrokerError(
            f"port {self.port} on {HOST} is already in use by another program (not the dev broker of "
            f"{self.data_dir}); pick another --port or stop that program"
        )

    def _prepare(self, java: str, libs: Path) -> None:
        """Write the broker's configuration and format its storage the first time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self._load_state()
        state["controller_port"] = self._pick_controller_port(state.get("controller_port"))
        state["port"] = self.port
        self._state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
        self._properties_file.write_text(self._server_properties(state["controller_port"]), encoding="utf-8")
        if not (self._storage_dir / "meta.properties").is_file():
            self._format_storage(java, libs, state["cluster_id"])

    def _load_state(self) -> dict[str, Any]:
        # The cluster id is chosen once per data directory: formatted storage remembers it.
        try:
            state: dict[str, Any] = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {"cluster_id": new_cluster_id()}
        return state

    def _pick_controller_port(self, previous: int | None) -> int:
        """The KRaft controller listens beside the broker: its previous port, else port + 1, else any.

        A single node is its own quorum, so it may move to another port between starts.
        """
        for candidate in (previous, self.port + 1):
            if candidate and candidate <= 65535 and port_free(candidate):
                return candidate
        return free_port()

    def _server_properties(self, controller_port: int) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._storage_dir),
            **self._dev_settings(),
            **self._sasl_settings(controller_port),
        }
        lines = ["# Written by dspex on every `dspex dev broker start`; edits are overwritten."]
        return "\n".join(lines + [f"{key}={value}" for key, value in settings.items()]) + "\n"

    def _sasl_settings(self, controller_port: int) -> dict[str, Any]:
        """The client listener as SASL_PLAINTEXT with PLAIN and one user (the broker logs in as it too)."""
        if self.sasl_plain is None:
            return {}
        user, password = self.sasl_plain
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{user}" password="{password}" user_{user}="{password}";'
        )
        return {
            "listeners": f"SASL_PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        }

    def _dev_settings(self) -> dict[str, Any]:
        """The design's dev timing and sizes: one replica, no rebalance delay, short sessions, big values."""
        return {
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "group.min.session.timeout.ms": self.group_min_session_timeout_ms,
            "message.max.bytes": _MAX_MESSAGE_BYTES,
            "replica.fetch.max.bytes": _MAX_MESSAGE_BYTES,
        }

    def _java_command(self, java: str, libs: Path, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            # The JIT's quick tier only: a fresh broker's optimizing compiler took more CPU than
            # the broker's work over a 6,000-example job (bench/pipeline_throughput.py --mode
            # defaults: 0.54-0.86 ms per example with it, 0.23-0.27 without), and still over 30,000.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-XX:+ExitOnOutOfMemoryError",
            f"-Dkafka.logs.dir={self.data_dir}",
            f"-Dlog4j2.configurationFile={self._write_log_config()}",
            "-cp",
            f"{libs}/*",  # java expands the wildcard itself
            *args,
        ]

    def _format_storage(self, java: str, libs: Path, cluster_id: str) -> None:
        args = ["kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id]
        command = self._java_command(java, libs, *args, "-c", str(self._properties_file))
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            detail = (done.stdout + done.stderr).strip()[-2000:]
            raise DevBrokerError(f"formatting KRaft storage in {self._storage_dir} failed:\n{detail}")

    def _spawn(self, java: str, libs: Path) -> int:
        command = self._java_command(java, libs, "kafka.Kafka", str(self._properties_file))
        with self._console_file.open("ab") as console:
            # Its own session: a Ctrl-C in the terminal that started it does not reach the broker.
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file.write_text(f"{self._process.pid}\n", encoding="ascii")
        logger.info("started Kafka %s pid %s on %s", kafka_version(), self._process.pid, self.bootstrap)
        return self._process.pid

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                excerpt = self._log_excerpt()
                raise DevBrokerError(f"the Kafka broker (pid {pid}) exited while starting{excerpt}")
            if self._answers(timeout=2.0):
                return
            time.sleep(0.2)
        raise DevBrokerError(
            f"the Kafka broker (pid {pid}) did not answer at {self.bootstrap} within "
            f"{self.startup_timeout:g} s{self._log_excerpt()}"
        )

    def _log_excerpt(self) -> str:
        parts = [(path, tail(path)) for path in (self._console_file, self.log_file)]
        shown = [f"\n--- last lines of {path} ---\n{text}" for path, text in parts if text]
        return "".join(shown) or f"; nothing was logged in {self.data_dir}"

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None  # our child: poll() also reaps it
        return is_kafka_process(pid)

    # ---- stop --------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the broker by its recorded pid (SIGTERM, SIGKILL after ``timeout``).

        Returns the pid that was stopped, or None when no broker of this data directory ran.
        """
        self._reap_own_child()
        if not self._pid_file.exists():
            return None  # nothing to stop; and no lock file left in a directory that never was one
        with file_lock(self.data_dir / ".lock"):
            pid = self._read_pid()
            if pid is None or not self._alive(pid):
                self._pid_file.unlink(missing_ok=True)
                return None
            self._terminate(pid, timeout)
            self._pid_file.unlink(missing_ok=True)
            return pid

    def _reap_own_child(self) -> None:
        # Another DevBroker (or the CLI) may have stopped the broker this object started: collect
        # its exit status, or the child stays a zombie and its Popen warns when collected.
        if self._process is None:
            return
        if self._process.poll() is None and not is_kafka_process(self._process.pid):
            # stopped elsewhere and still on its way out (its /proc entry no longer names Kafka
            # before it becomes a zombie): collect it rather than leave it to the garbage collector
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10.0)
        if self._process.poll() is not None:
            self._process = None

    def _terminate(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._wait_exit(pid, timeout):
            return
        logger.warning("Kafka broker pid %s ignored SIGTERM for %.0f s; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(pid, 10.0):
            raise DevBrokerError(f"the Kafka broker (pid {pid}) did not exit even after SIGKILL")

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

"""`dspex worker predict|score|aggregate|optimize`: run one pipeline worker until SIGTERM or Ctrl-C.

Each process is one member of its kind's consumer group (``<prefix>predict``, ``<prefix>score``);
start more of the same kind to scale out, up to the partition count of its input topic. On SIGTERM
or SIGINT a worker stops taking messages, gives running ones ``--drain-timeout`` seconds (at most
5), commits what is done and leaves the group; whatever was not finished is handled again by another
member. Whatever it waits for (a broker that is gone included), it exits within 8 s of the signal,
logging what it left undone, and at once on a second SIGTERM or SIGINT; its child processes
(code sandboxes) end with it. While Kafka is unreachable it logs one warning, a summary every 10 s
and one line when Kafka is back (:mod:`dspex.streams.outage`).

Choices worth knowing:

* LM response cache: OFF in workers unless ``--lm-cache-dir`` is given, so that every task is
  answered by the LM (what "distributed equals local" and usage accounting expect).
* ``--fast-groups``: the short group timing of tests and the dev broker (6 s session timeout, 1 s
  heartbeats), so a killed worker's partitions move in seconds; OFF by default (Kafka's timing,
  right for production). `make demo` and the end-to-end tests turn it on.
* LM flow control per endpoint: an adaptive concurrency limit (starts at ``--lm-initial-limit``,
  doubles per round trip until the first 429 or timeout, then grows by about one per round trip,
  halves on 429s and timeouts, at most ``--concurrency``), optional fixed
  caps ``--max-rps`` and ``--max-tpm`` per worker, and a circuit breaker that pauses the worker's
  partitions after ``--breaker-failures`` consecutive connection failures or 5xx answers.
* Security: see ``--allow-module``, ``--allow-api-base`` and ``--allow-key-env``; with none given a
  worker runs dspex's own modules against loopback LMs only.
* Debugging a stuck worker: ``kill -USR1 <pid>`` writes the stack of every thread to its stderr.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from dspex._gc import tune_gc_for_worker
from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.configuration import configure
from dspex.errors import ConfigurationError, KafkaError
from dspex.observability.server import DEFAULT_METRICS_HOST, DEFAULT_TARGETS_DIR
from dspex.processors.aggregator import run_aggregator
from dspex.processors.aggregator_options import AggregatorOptions
from dspex.processors.common import Worker, WorkerOptions
from dspex.processors.endpoints import EndpointOptions
from dspex.processors.predictor import Predictor
from dspex.processors.scorer import Scorer
from dspex.processors.security import SecurityPolicy
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings

__all__ = ["DEFAULT_AGGREGATE_DIR", "register"]

DEFAULT_AGGREGATE_DIR = Path("~/.cache/dspex/aggregate")

worker_app = typer.Typer(
    name="worker",
    help="Run a pipeline worker: predict (tasks -> predictions), score (-> scores), aggregate (-> status), "
    "optimize (optimize jobs -> checkpoints, best programs, status).",
    no_args_is_help=True,
)

ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, help="Messages in flight at once in this process.")
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Port of /metrics (default: the first free port in 9400-9499). A port in use is an error.",
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="Interface /metrics binds to; keep loopback unless you mean it.")
]
TargetsDirOption = Annotated[
    Path,
    typer.Option(
        "--prometheus-targets-dir",
        envvar="DSPEX_PROMETHEUS_TARGETS_DIR",
        help="Where this worker registers its /metrics for Prometheus file_sd discovery (removed on stop).",
    ),
]
AllowModuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-module",
        help="Module (or package) jobs may import program classes and metrics from; repeatable. "
        "dspex's own modules are always allowed.",
    ),
]
CallbackOption = Annotated[
    list[str] | None,
    typer.Option(
        "--callback",
        help="A dspex callback (BaseCallback subclass or instance) by import path 'pkg.mod:Name', from "
        "an --allow-module module; repeatable. It runs in every program this worker runs, and what it "
        "hears is stored in each prediction's result (callback_events).",
    ),
]
AllowApiBaseOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-api-base",
        help="LM API base jobs may point at (the URL and paths under it); repeatable. "
        "Default: loopback API bases only (127.0.0.1, localhost, ::1, any port).",
    ),
]
AllowKeyEnvOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-key-env",
        help="Environment variable whose API key jobs may use; repeatable. Default: keys are sent "
        "to loopback API bases only.",
    ),
]
SandboxPoolOption = Annotated[
    int,
    typer.Option(
        "--sandbox-pool",
        min=0,
        help="Warm code sandboxes (Deno + Pyodide) for RLM, ProgramOfThought and CodeAct programs; "
        "0 (default): this worker runs no code and such tasks fail with that reason.",
    ),
]
WorkerIdOption = Annotated[
    str | None, typer.Option("--worker-id", help="Name in heartbeats and metrics (default KIND-HOST-PID).")
]
LMCacheOption = Annotated[
    Path | None,
    typer.Option(
        "--lm-cache-dir",
        help="Turn the LM response cache on, in this directory (default: off, every task calls the LM).",
    ),
]
FastGroupsOption = Annotated[
    bool,
    typer.Option(
        "--fast-groups/--no-fast-groups",
        envvar="DSPEX_FAST_GROUPS",
        help="Short consumer-group timing (6 s session) for tests and the dev broker; off = Kafka's.",
    ),
]
DrainOption = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        min=0.1,
        help="Seconds running messages get to finish when partitions are revoked (on shutdown: at most 5).",
    ),
]

InitialLimitOption = Annotated[
    int,
    typer.Option(
        "--lm-initial-limit",
        min=1,
        help="Starting concurrency limit per LM endpoint (doubles per round trip until the first 429).",
    ),
]
MaxRpsOption = Annotated[
    float | None,
    typer.Option("--max-rps", min=0.001, help="Fixed cap: LM requests/s per endpoint (default none)."),
]
MaxTpmOption = Annotated[
    float | None,
    typer.Option("--max-tpm", min=1, help="Fixed cap: LM tokens per minute per endpoint (default none)."),
]
BreakerFailuresOption = Annotated[
    int,
    typer.Option(
        "--breaker-failures",
        min=1,
        help="Consecutive connection failures or 5xx answers that open an endpoint's circuit breaker.",
    ),
]
BreakerOpenOption = Annotated[
    float,
    typer.Option("--breaker-open-s", min=0.01, help="Seconds an open breaker waits before a probe call."),
]


def _endpoint_options(
    initial_limit: int, max_rps: float | None, max_tpm: float | None, failures: int, open_s: float
) -> EndpointOptions:
    try:
        return EndpointOptions(
            initial_limit=initial_limit,
            max_rps=max_rps,
            max_tpm=max_tpm,
            breaker_failures=failures,
            breaker_open_s=open_s,
        )
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _options(
    prefix: str,
    concurrency: int,
    metrics_port: int | None,
    metrics_host: str,
    targets_dir: Path,
    allow_module: list[str] | None,
    allow_api_base: list[str] | None,
    allow_key_env: list[str] | None,
    worker_id: str | None,
    lm_cache_dir: Path | None,
    fast_groups: bool,
    drain_timeout: float,
    endpoints: EndpointOptions | None = None,
    callbacks: list[str] | None = None,
    sandbox_pool: int = 0,
) -> WorkerOptions:
    try:
        policy = SecurityPolicy(
            allow_modules=allow_module or (),
            allow_api_bases=allow_api_base,
            allow_key_envs=allow_key_env,
        )
        return WorkerOptions(
            prefix=prefix,
            worker_id=worker_id,
            concurrency=concurrency,
            policy=policy,
            fast_groups=fast_groups,
            drain_timeout=drain_timeout,
            lm_cache_dir=lm_cache_dir,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            targets_dir=targets_dir,
            endpoints=endpoints or EndpointOptions(),
            callbacks=tuple(callbacks or ()),
            sandbox_pool=sandbox_pool,
        )
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _settings(bootstrap: str) -> KafkaSettings:
    try:
        settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    probe_or_exit(settings)
    return settings


def _serve(worker: Worker) -> None:
    """Run ``worker`` until SIGTERM / SIGINT; Kafka and configuration failures exit 1 with the reason."""
    _configure_logging()

    async def main() -> None:
        tune_gc_for_worker()
        # no LM call history and no DSPy trace list kept in a long-running worker: memory stays flat
        configure(disable_history=True, trace=None)
        worker.install_signal_handlers()
        await worker.run()

    try:
        asyncio.run(main())
    except (ConfigurationError, KafkaError) as exc:
        fail(str(exc))


def _configure_logging() -> None:
    # `kill -USR1 <pid>` writes every thread's stack to the worker's stderr: where a stuck worker
    # is stuck, without stopping it or attaching a debugger
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # one INFO line per LM request would drown what a worker's log is for
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@worker_app.command(
    "predict",
    epilog="Example: dspex worker predict --bootstrap 127.0.0.1:9092 --prefix dspex. --concurrency 1024 "
    "--allow-api-base https://api.openai.com/v1 --allow-key-env OPENAI_API_KEY",
)
def predict(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    # 1,024 in flight, the LM limit from 256 (slow start: 1,024 two round trips later). The old 256 /
    # 32 (additive ramp) did 622/s at 100 ms and 129/s at 1 s against 1,587/s and 803/s with 1,024 /
    # 1,024 (issue 18); these defaults match 1,024 / 1,024 (bench/pipeline_throughput.py --mode
    # defaults: 485 vs 407/s at 100 ms, 681 vs 627/s at 1 s, 2 cores at load 8-14, 0 errors), and
    # a predictor with 1,024 in flight stayed at 160 MB RSS.
    concurrency: ConcurrencyOption = 1024,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
    targets_dir: TargetsDirOption = DEFAULT_TARGETS_DIR,
    allow_module: AllowModuleOption = None,
    allow_api_base: AllowApiBaseOption = None,
    allow_key_env: AllowKeyEnvOption = None,
    worker_id: WorkerIdOption = None,
    lm_cache_dir: LMCacheOption = None,
    fast_groups: FastGroupsOption = False,
    drain_timeout: DrainOption = 10.0,
    lm_initial_limit: InitialLimitOption = 256,
    max_rps: MaxRpsOption = None,
    max_tpm: MaxTpmOption = None,
    breaker_failures: BreakerFailuresOption = 5,
    breaker_open_s: BreakerOpenOption = 1.0,
    callback: CallbackOption = None,
    sandbox_pool: SandboxPoolOption = 0,
) -> None:
    """Run programs on tasks and publish predictions (consumer group PREFIXpredict).

    API keys come from this process's environment only, named by the job's LM settings and allowed
    by --allow-key-env; nothing is sent to an API base outside --allow-api-base.
    """
    endpoints = _endpoint_options(lm_initial_limit, max_rps, max_tpm, breaker_failures, breaker_open_s)
    options = _options(
        prefix, concurrency, metrics_port, metrics_host, targets_dir, allow_module, allow_api_base,
        allow_key_env, worker_id, lm_cache_dir, fast_groups, drain_timeout, endpoints, callback,
        sandbox_pool,
    )  # fmt: skip
    _serve(Predictor(_settings(bootstrap), options))


@worker_app.command(
    "score",
    epilog="Example: dspex worker score --bootstrap 127.0.0.1:9092 --prefix dspex. "
    "--allow-module mypkg.metrics",
)
def score(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    concurrency: ConcurrencyOption = 256,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
    targets_dir: TargetsDirOption = DEFAULT_TARGETS_DIR,
    allow_module: AllowModuleOption = None,
    allow_api_base: AllowApiBaseOption = None,
    allow_key_env: AllowKeyEnvOption = None,
    worker_id: WorkerIdOption = None,
    lm_cache_dir: LMCacheOption = None,
    fast_groups: FastGroupsOption = False,
    drain_timeout: DrainOption = 10.0,
) -> None:
    """Score predictions with their job's metric and publish scores (consumer group PREFIXscore).

    Metrics by built-in name (exact_match:answer) or by import path from an --allow-module module.
    """
    options = _options(
        prefix, concurrency, metrics_port, metrics_host, targets_dir, allow_module, allow_api_base,
        allow_key_env, worker_id, lm_cache_dir, fast_groups, drain_timeout,
    )  # fmt: skip
    _serve(Scorer(_settings(bootstrap), options))


@worker_app.command(
    "optimize",
    epilog="Example: dspex worker optimize --bootstrap 127.0.0.1:9092 --prefix dspex. --fast-groups",
)
def optimize(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    concurrency: ConcurrencyOption = 16,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
    targets_dir: TargetsDirOption = DEFAULT_TARGETS_DIR,
    allow_module: AllowModuleOption = None,
    allow_api_base: AllowApiBaseOption = None,
    allow_key_env: AllowKeyEnvOption = None,
    worker_id: WorkerIdOption = None,
    lm_cache_dir: LMCacheOption = None,
    fast_groups: FastGroupsOption = False,
) -> None:
    """Run optimize jobs, checkpointing every step (consumer group PREFIXoptimize).

    Evaluations go to the cluster as evaluation jobs; bootstrapping runs in this process with the
    job's LM. Killed, the next optimize worker resumes from the last checkpoint; on a rebalance the
    step in progress is given up at once (it is redone by the next owner).
    """
    # Imported here: the coordinator brings the client along, which no other worker kind needs.
    from dspex.processors.optimizer import OptimizeCoordinator

    options = _options(
        prefix, concurrency, metrics_port, metrics_host, targets_dir, allow_module, allow_api_base,
        allow_key_env, worker_id, lm_cache_dir, fast_groups, 0.1,
    )  # fmt: skip
    _serve(OptimizeCoordinator(_settings(bootstrap), options))


@worker_app.command(
    "aggregate",
    epilog="Example: dspex worker aggregate --bootstrap 127.0.0.1:9092 --prefix dspex. --fast-groups",
)
def aggregate(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    web_port: Annotated[
        int | None,
        typer.Option("--web-port", min=1, max=65535, help="Port of faust's web server (default: off)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="faust's local table state (default ~/.cache/dspex/aggregate/PREFIX)."
        ),
    ] = None,
    worker_id: WorkerIdOption = None,
    fast_groups: FastGroupsOption = False,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = DEFAULT_METRICS_HOST,
    targets_dir: TargetsDirOption = DEFAULT_TARGETS_DIR,
) -> None:
    """Aggregate scores into job status (a faust app, consumer group PREFIXaggregate).

    Its /metrics also carries the lag of every pipeline group (predict, score, aggregate), read
    through the admin API, so lag shows even when no member of a group is alive.
    """
    settings = _settings(bootstrap)
    _configure_logging()
    state_dir = data_dir if data_dir is not None else DEFAULT_AGGREGATE_DIR.expanduser() / (prefix or "_")
    try:
        options = AggregatorOptions(
            prefix=prefix,
            web_port=web_port,
            data_dir=state_dir,
            fast_groups=fast_groups,
            worker_id=worker_id,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            targets_dir=targets_dir,
        )
        run_aggregator(settings, options)
    except (ConfigurationError, KafkaError) as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    """Add `dspex worker` to the root command."""
    app.add_typer(worker_app, name="worker")

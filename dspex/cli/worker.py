"""`dspex worker predict|score|aggregate|optimize|intake|provider-batch`: run one pipeline worker
until SIGTERM or Ctrl-C.

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
* Security: see ``--allow-module``, ``--allow-api-base``, ``--allow-key-env`` and ``--allow-mcp-server``;
  with none given a worker runs dspex's own modules against loopback LMs only, and no MCP server.
* Debugging a stuck worker: ``kill -USR1 <pid>`` writes the stack of every thread to its stderr.
* Options: declared once, as the fields of :class:`~dspex.cli._worker_options.WorkerSettings`
  (``aggregate``: :class:`~dspex.processors.aggregator_options.AggregatorOptions`); one not given on
  the command line may come from ``DSPEX_WORKER_<OPTION>`` (``DSPEX_WORKER_CONCURRENCY=64``;
  ``aggregate``: ``DSPEX_AGGREGATOR_<OPTION>``).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
from typing import Any

import typer

from dspex._gc import tune_gc_for_worker
from dspex._loop import run_worker_loop
from dspex.cli._common import fail, probe_or_exit
from dspex.cli._worker_options import options_command, worker_command
from dspex.configuration import configure
from dspex.errors import ConfigurationError, KafkaError
from dspex.processors.aggregator import run_aggregator
from dspex.processors.aggregator_options import AggregatorOptions
from dspex.processors.common import Worker, WorkerOptions
from dspex.processors.predictor import Predictor
from dspex.processors.scorer import Scorer
from dspex.streams.config import KafkaSettings
from dspex.utils.mcp import restrict_mcp_servers

__all__ = ["register"]

worker_app = typer.Typer(
    name="worker",
    help="Run a pipeline worker: predict (tasks -> predictions), score (-> scores), aggregate (-> status), "
    "optimize (optimize jobs -> checkpoints, best programs, status), "
    "intake (submit messages -> candidates, jobs, tasks).",
    no_args_is_help=True,
)

# The options of predict, score and optimize, in the order their help lists them.
_COMMON = (
    "prefix",
    "concurrency",
    "metrics_port",
    "metrics_host",
    "targets_dir",
    "allow_module",
    "allow_api_base",
    "allow_key_env",
    "worker_id",
    "lm_cache_dir",
    "fast_groups",
    "otlp_endpoint",
    "price",
)
_FLOW_CONTROL = ("lm_initial_limit", "max_rps", "max_tpm", "breaker_failures", "breaker_open_s")


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
        # MCP tools built in this process reach only the servers this worker allows
        restrict_mcp_servers(worker.options.policy.check_mcp_server)
        # no LM call history and no DSPy trace list kept in a long-running worker: memory stays flat
        configure(disable_history=True, trace=None)
        worker.install_signal_handlers()
        await worker.run()

    try:
        run_worker_loop(main())  # uvloop where installed (dspex._loop: DSPEX_EVENT_LOOP)
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


@worker_command(
    worker_app,
    "predict",
    (
        *_COMMON,
        "allow_mcp_server",
        "allow_media_fetch",
        "record_lm_calls",
        "inline_builtin_metrics",
        "drain_timeout",
        *_FLOW_CONTROL,
        "callback",
        "sandbox_pool",
    ),
    epilog="Example: dspex worker predict --bootstrap 127.0.0.1:9092 --prefix dspex. --concurrency 1024 "
    "--allow-api-base https://api.openai.com/v1 --allow-key-env OPENAI_API_KEY",
)
def predict(bootstrap: str, options: WorkerOptions) -> None:
    """Run programs on tasks and publish predictions (consumer group PREFIXpredict).

    Predictions of jobs with a built-in metric are scored here and published as scores (see
    --no-inline-builtin-metrics); the others go to the scorer.

    API keys come from this process's environment only, named by the job's LM settings and allowed
    by --allow-key-env; nothing is sent to an API base outside --allow-api-base.
    """
    _serve(Predictor(_settings(bootstrap), options))


@worker_command(
    worker_app,
    "score",
    (*_COMMON, "drain_timeout"),
    epilog="Example: dspex worker score --bootstrap 127.0.0.1:9092 --prefix dspex. "
    "--allow-module mypkg.metrics",
    defaults={"concurrency": 256},
)
def score(bootstrap: str, options: WorkerOptions) -> None:
    """Score predictions with their job's metric and publish scores (consumer group PREFIXscore).

    Metrics by built-in name (exact_match:answer) or by import path from an --allow-module module.
    """
    _serve(Scorer(_settings(bootstrap), options))


@worker_command(
    worker_app,
    "optimize",
    (*_COMMON, "allow_mcp_server", "mlflow_uri"),
    epilog="Example: dspex worker optimize --bootstrap 127.0.0.1:9092 --prefix dspex. --fast-groups",
    defaults={"concurrency": 16},
    # an optimize worker gives a step up at once on a rebalance: its runtime drains for 0.1 s
    fixed={"drain_timeout": 0.1},
)
def optimize(bootstrap: str, options: WorkerOptions) -> None:
    """Run optimize jobs, checkpointing every step (consumer group PREFIXoptimize).

    Evaluations go to the cluster as evaluation jobs; bootstrapping runs in this process with the
    job's LM. Killed, the next optimize worker resumes from the last checkpoint; on a rebalance the
    step in progress is given up at once (it is redone by the next owner).
    """
    # Imported here: the coordinator brings the client along, which no other worker kind needs.
    from dspex.processors.optimizer import OptimizeCoordinator

    _serve(OptimizeCoordinator(_settings(bootstrap), options))


@options_command(
    worker_app,
    "aggregate",
    AggregatorOptions,
    tuple(AggregatorOptions.model_fields),
    epilog="Example: dspex worker aggregate --bootstrap 127.0.0.1:9092 --prefix dspex. --fast-groups. "
    "An option not given may come from DSPEX_AGGREGATOR_<OPTION> (DSPEX_AGGREGATOR_COMMIT_EVERY=300).",
)
def aggregate(bootstrap: str, given: dict[str, Any]) -> None:
    """Aggregate scores into job status (a faust app, consumer group PREFIXaggregate).

    Its /metrics also carries the lag of every pipeline group (predict, score, aggregate), read
    through the admin API, so lag shows even when no member of a group is alive.
    """
    try:
        # what the command line does not give, AggregatorOptions reads from DSPEX_AGGREGATOR_*
        options = AggregatorOptions(**given)
    except ConfigurationError as exc:  # a bad value: a usage error (exit 2), as the other workers'
        raise typer.BadParameter(str(exc)) from exc
    settings = _settings(bootstrap)
    _configure_logging()
    try:
        run_aggregator(settings, options)
    except (ConfigurationError, KafkaError) as exc:
        fail(str(exc))


@worker_command(
    worker_app,
    "intake",
    # the common options but the LM cache (the intake calls no LM), and its tasks timeout
    (*(name for name in _COMMON if name not in {"lm_cache_dir", "price"}), "tasks_timeout"),
    epilog="Example: dspex worker intake --bootstrap 127.0.0.1:9092 --prefix dspex. --allow-module mypkg",
    defaults={"concurrency": 16},
)
def intake(bootstrap: str, options: WorkerOptions) -> None:
    """Expand submit messages into candidates, jobs and tasks (consumer group PREFIXintake).

    Any producer may submit an evaluation as one JSON message on PREFIXsubmit (docs/protocol.md).
    A message that fails validation goes to the DLQ and its job fails (invalid_submit); an
    evaluation with nothing done --tasks-timeout seconds after its submission fails (tasks_missing).
    """
    # Imported here: the intake expands submissions with the client's code, which no other kind needs.
    from dspex.processors.intake import Intake

    _serve(Intake(_settings(bootstrap), options, tasks_timeout_s=options.tasks_timeout))


@worker_command(
    worker_app,
    "provider-batch",
    (
        *(name for name in _COMMON if name not in {"lm_cache_dir", "price"}),
        "batch_window",
        "batch_poll",
        "batch_max_requests",
        "batch_max_bytes",
        "batch_max_tries",
        "batch_retry",
    ),
    epilog="Example: dspex worker provider-batch --bootstrap 127.0.0.1:9092 --prefix dspex. "
    "--allow-api-base https://api.openai.com/v1 --allow-key-env OPENAI_API_KEY",
    # every parked request waits in it until its batch is checkpointed
    defaults={"concurrency": 50_000},
)
def provider_batch(bootstrap: str, options: WorkerOptions) -> None:
    """Send batch-mode jobs' LM requests through the provider's Batch API (consumer group
    PREFIXprovider-batch); not Module.batch.

    Collects parked requests (PREFIXlm-requests) for --batch-window seconds, submits them within the
    provider's limits, checkpoints each batch in PREFIXlm-batches (a restart submits nothing twice),
    and sends each answered task back to the predictors. Run one per prefix.
    """
    # Imported here: only this kind needs the Batch API client.
    from dspex.processors.provider_batch import ProviderBatchWorker

    _serve(ProviderBatchWorker(_settings(bootstrap), options))


def register(app: typer.Typer) -> None:
    """Add `dspex worker` to the root command."""
    app.add_typer(worker_app, name="worker")

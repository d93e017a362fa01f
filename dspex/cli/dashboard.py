"""`dspex dashboard`: the live job dashboard in a browser (jobs, progress, trajectories, workers).

It follows the status and workers topics (all partitions) and serves a page and a JSON API on
127.0.0.1 unless ``--host`` says otherwise. A port in use fails at start-up, naming the port; so do
missing topics (a wrong ``--prefix``), since a dashboard only reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.errors import ConfigurationError, KafkaError, TopicError
from dspex.observability.dashboard.web import DEFAULT_HOST, serve_dashboard
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings

__all__ = ["dashboard", "register"]

DEFAULT_PORT = 8765


def dashboard(
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; keep loopback unless you mean to share it.")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the page and API.")] = (
        DEFAULT_PORT
    ),
) -> None:
    """Serve the live dashboard: jobs with progress, scores, tokens and cost; optimization
    trajectories; workers. JSON API: /api/jobs, /api/jobs/JOB_ID, /api/workers.

    Example: dspex dashboard --bootstrap 127.0.0.1:9092 --port 8765
    """
    try:
        settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    probe_or_exit(settings)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"dashboard: http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    try:
        asyncio.run(serve_dashboard(settings, prefix=prefix, host=host, port=port))
    except KeyboardInterrupt:
        pass
    except TopicError as exc:
        fail(f"{exc} (is --prefix {prefix!r} right? `dspex topics create` makes the topics)")
    except (ConfigurationError, KafkaError) as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    """Add `dspex dashboard` to the root command."""
    app.command("dashboard")(dashboard)

"""`dspex dashboard`: the live job dashboard in a browser (jobs, progress, trajectories, workers).

It follows the status and workers topics (all partitions) and serves a page and a JSON API on
127.0.0.1 unless ``--host`` says otherwise. Any other address needs a token (``--token`` or, kept
out of ``ps``, ``DSPEX_DASHBOARD_TOKEN``) or an explicit ``--insecure-no-token``; with a token every
request must carry it (see :mod:`dspex.observability.dashboard.access`). A port in use fails at
start-up, naming the port; so do missing topics (a wrong ``--prefix``), since a dashboard only reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.errors import ConfigurationError, KafkaError, TopicError
from dspex.observability.dashboard.access import TOKEN_ENV, check_binding
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
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV,
            show_envvar=True,
            show_default=False,
            help="Every request must carry it (Bearer header, or open /?token=... once); required "
            "for a --host other than loopback. Prefer the variable: options show in `ps`.",
        ),
    ] = None,
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Serve a non-loopback --host without a token (only on a network you trust).",
        ),
    ] = False,
) -> None:
    """Serve the live dashboard: jobs with progress, scores, tokens and cost; optimization
    trajectories; workers. JSON API: /api/jobs, /api/jobs/JOB_ID, /api/workers.

    Example: dspex dashboard --bootstrap 127.0.0.1:9092 --port 8765
    """
    token = token or None  # an empty variable is no token
    try:
        settings = KafkaSettings.from_env(os.environ, bootstrap_servers=bootstrap)
        if token is not None or not insecure_no_token:  # the warning itself comes once, when serving
            check_binding(host, token)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    probe_or_exit(settings)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    where = f"http://{host}:{port}/"
    login = f" (open {where}?token=TOKEN once in a browser)" if token else ""
    typer.echo(f"dashboard: {where}{login} (Ctrl-C stops it)", err=True)
    serve = serve_dashboard(
        settings, prefix=prefix, host=host, port=port, token=token, insecure_no_token=insecure_no_token
    )
    try:
        asyncio.run(serve)
    except KeyboardInterrupt:
        pass
    except TopicError as exc:
        fail(f"{exc} (is --prefix {prefix!r} right? `dspex topics create` makes the topics)")
    except (ConfigurationError, KafkaError) as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    """Add `dspex dashboard` to the root command."""
    app.command("dashboard")(dashboard)

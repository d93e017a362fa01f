"""The `dspex` command line.

Each command module adds its commands through ``register(app)``; this root only wires them
together and turns dspex's own errors into a one-line message and exit code 1 (typer keeps
exit code 2 for bad usage).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

import dspex
from dspex.cli import (
    batches,
    dashboard,
    demo,
    dev,
    dlq,
    jobs,
    optimize,
    purge,
    schemas,
    simlm,
    topics,
    worker,
)
from dspex.errors import DspexError

__all__ = ["app", "installed_version", "main"]

app = typer.Typer(
    name="dspex",
    help="DSPy's programming model on Kafka: evaluate and optimize LM programs with scaled-out workers.",
    epilog="Example: dspex dev broker start && dspex topics create --bootstrap 127.0.0.1:9092",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # locals may hold API keys
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dspex {installed_version()}")
        raise typer.Exit()


def installed_version() -> str:
    """The installed distribution's version (the package's own when it is not installed)."""
    try:
        return version("dspex")
    except PackageNotFoundError:
        return dspex.__version__


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """DSPy's programming model on Kafka: evaluate and optimize LM programs with scaled-out workers."""


for _module in (demo, dev, schemas, topics, worker, jobs, purge, optimize, dlq, dashboard, simlm, batches):
    _module.register(app)


def main() -> None:
    """Entry point of the `dspex` script."""
    try:
        app()
    except DspexError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)

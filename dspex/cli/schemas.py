"""`dspex schemas ...`: the message schemas as files, for people and for non-Python clients."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dspex.schemas import MESSAGE_MODELS, TOPIC_VALUE_MODELS, export_json_schemas, model_name

__all__ = ["register"]

schemas_app = typer.Typer(
    name="schemas",
    help="Message schemas of every dspex topic (pydantic models, exported as JSON Schema).",
    no_args_is_help=True,
)


@schemas_app.command("export")
def export(
    directory: Annotated[
        Path, typer.Argument(help="Folder to write <Model>.schema.json files into (created if missing).")
    ],
) -> None:
    """Write a JSON Schema file for every message model and union.

    Example: dspex schemas export build/schemas
    """
    try:
        written = export_json_schemas(directory)
    except OSError as exc:
        typer.echo(f"cannot write schemas to {directory}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    for path in written:
        typer.echo(str(path))
    typer.echo(f"wrote {len(written)} schemas to {directory}", err=True)


@schemas_app.command("list")
def list_schemas() -> None:
    """Show which model each topic carries, and the schema version this dspex writes.

    Example: dspex schemas list
    """
    for role, value_model in TOPIC_VALUE_MODELS.items():
        typer.echo(f"{role:<16} {model_name(value_model)}")
    typer.echo("")
    for model in MESSAGE_MODELS:
        typer.echo(f"{model.__name__:<20} {getattr(model, 'SCHEMA_VERSION', '?')}")


def register(app: typer.Typer) -> None:
    """Add the ``schemas`` command group to the root CLI."""
    app.add_typer(schemas_app, name="schemas")

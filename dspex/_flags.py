"""How a settings field reads on a command line, taken from the field itself.

A settings object (:class:`~dspex.cli._worker_options.WorkerSettings`,
:class:`~dspex.processors.aggregator_options.AggregatorOptions`) declares each option once, as a
pydantic field: its description is the help, its default and bounds are the option's. :func:`cli`
adds what a field cannot say by itself (a flag spelled other than ``--field-name``, a variable of
its own), and :func:`field_flags` reads it all back, for the typer commands and for argparse alike.

    >>> from pydantic import BaseModel, Field
    >>> class Options(BaseModel):
    ...     port: int = Field(80, ge=1, le=65535, description="Port to listen on.")
    >>> field_flags(Options)["port"].flag, field_flags(Options)["port"].bounds
    ('--port', {'min': 1, 'max': 65535})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import annotated_types
from pydantic import BaseModel, JsonValue
from pydantic.fields import FieldInfo

__all__ = ["FieldFlag", "cli", "field_flags"]


def cli(flag: str | None = None, envvar: str | None = None) -> dict[str, JsonValue]:
    """A field's ``json_schema_extra``: its flag where it is not ``--field-name`` (``--x/--no-x``
    for an on/off pair) and the variable of its own that sets it, if any."""
    return {key: value for key, value in {"flag": flag, "envvar": envvar}.items() if value is not None}


@dataclass(frozen=True)
class FieldFlag:
    """One field as a command-line option."""

    name: str
    flag: str  # typer's declaration: "--name", or "--name/--no-name" for an on/off pair
    help: str | None
    envvar: str | None
    boolean: bool
    bounds: dict[str, Any] = field(default_factory=dict)  # typer's min / max

    @property
    def names(self) -> tuple[str, ...]:
        """Every spelling of the flag (``("--metrics", "--no-metrics")``)."""
        return tuple(self.flag.split("/"))


def field_flags(model: type[BaseModel]) -> dict[str, FieldFlag]:
    """Each field of ``model`` as a command-line option, in declaration order."""
    return {name: _flag(name, info) for name, info in model.model_fields.items()}


def _flag(name: str, info: FieldInfo) -> FieldFlag:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    envvar = extra.get("envvar")
    return FieldFlag(
        name=name,
        flag=str(extra.get("flag") or "--" + name.replace("_", "-")),
        help=info.description,
        envvar=str(envvar) if envvar else None,
        boolean=info.annotation is bool,
        bounds=_bounds(info.metadata),
    )


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for constraint in metadata:
        if isinstance(constraint, annotated_types.Ge):
            bounds["min"] = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            bounds["max"] = constraint.le
    return bounds

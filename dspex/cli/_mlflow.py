"""``--mlflow-uri`` of ``dspex eval`` and ``dspex optimize``: log the run to an MLflow tracking server.

The server is checked before anything is submitted: one that cannot be reached is a usage error
(exit 2) naming the URI.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dspex.configuration import configure
from dspex.errors import ConfigurationError

__all__ = ["MlflowUriOption", "start_mlflow"]

MlflowUriOption = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        metavar="URL",
        help="Log the run to this MLflow tracking server (experiment: MLFLOW_EXPERIMENT_NAME or dspex).",
    ),
]


def start_mlflow(uri: str | None) -> None:
    """Turn MLflow logging on for this command (nothing when ``uri`` is None)."""
    if not uri:
        return
    try:
        configure(mlflow=uri)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mlflow-uri") from None

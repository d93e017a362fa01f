"""Where MLflow runs go: :class:`MlflowSettings`.

``dspex.configure(mlflow=MlflowSettings(tracking_uri="http://mlflow:5000"))`` (or just the URI) turns
MLflow logging on in this process; ``--mlflow-uri`` does the same for ``dspex eval`` and
``dspex optimize``. ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` fill what is left unset
when the value is ``True``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, field_validator

from dspex.errors import ConfigurationError

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_TIMEOUT_S", "MlflowSettings", "resolve"]

DEFAULT_EXPERIMENT: Final = "dspex"
DEFAULT_TIMEOUT_S: Final = 10.0


class MlflowSettings(BaseModel):
    """MLflow logging of this process's evaluations and optimizations.

    ``tracking_uri``: the tracking server's base URL (``http://host:5000``; only http(s) tracking
    servers are supported). ``experiment``: the experiment the runs go
    into, created if missing. ``run_name``: the name of every run logged (None: the program's
    class and the kind of run, e.g. ``Predict eval``). ``nested_evaluations``: an optimization's
    candidate evaluations, local or on the cluster, become child runs of its run (False: only the
    optimization's run is logged).
    ``timeout_s``: the longest one request to the server may take (MLflow's client takes whole
    seconds: it is rounded up and set as ``MLFLOW_HTTP_REQUEST_TIMEOUT`` in this process, with
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 0); logging that fails or times out is a warning, never a
    failed evaluation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tracking_uri: str
    experiment: str = DEFAULT_EXPERIMENT
    run_name: str | None = None
    nested_evaluations: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_S

    @field_validator("tracking_uri")
    @classmethod
    def _http_uri(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"MlflowSettings(tracking_uri={value!r}) needs an http:// or https:// URL of a tracking "
                "server"
            )
        return value.rstrip("/")

    @field_validator("experiment")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("MlflowSettings(experiment=...) needs a non-empty name")
        return value

    @field_validator("timeout_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError("MlflowSettings(timeout_s=...) needs a positive number")
        return value


def resolve(value: Any, env: Mapping[str, str] | None = None) -> MlflowSettings | None:
    """``configure(mlflow=value)``'s value as settings; None when MLflow logging is to be off.

    ``value``: None or False (off), True (``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME``),
    a tracking URI, or an :class:`MlflowSettings`. A bad value is a one-line ConfigurationError.
    """
    environ = os.environ if env is None else env
    if value is None or value is False:
        return None
    if isinstance(value, MlflowSettings):
        return value
    if value is True:
        uri = environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            raise ConfigurationError("configure(mlflow=True) needs MLFLOW_TRACKING_URI set")
        return _settings(uri, environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    if isinstance(value, str):
        return _settings(value, environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    raise ConfigurationError(
        "configure(mlflow=...) needs None, a bool, a tracking URI or a dspex.MlflowSettings, got "
        f"{type(value).__module__}.{type(value).__qualname__}"
    )


def _settings(uri: str, experiment: str) -> MlflowSettings:
    try:
        return MlflowSettings(tracking_uri=uri, experiment=experiment)
    except ValueError as exc:
        raise ConfigurationError(_first_message(exc)) from exc


def _first_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        found = errors()
        if found:
            return str(found[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)

"""What turns tracing on, where spans go and how many traces are kept: :class:`TracingSettings`.

Tracing is off unless a process asks for it: ``dspex.configure(tracing=...)`` in a client,
``--otlp-endpoint`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) when a worker starts. Values left unset
come from the standard OpenTelemetry variables:

* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base
  URL; ``/v1/traces`` is appended): where spans are sent, over OTLP/HTTP (protobuf);
* ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``: ``always_on`` / ``parentbased_always_on``
  keep every trace, ``always_off`` / ``parentbased_always_off`` none but failed ones,
  ``traceidratio`` / ``parentbased_traceidratio`` the fraction ``OTEL_TRACES_SAMPLER_ARG``;
* ``OTEL_SERVICE_NAME``: the ``service.name`` resource attribute;
* ``OTEL_SDK_DISABLED=true``: tracing stays off whatever else is set.

Sampling is always parent-based: a span continues its parent's decision (across Kafka too), and a
new trace (one example) is kept with probability :data:`DEFAULT_SAMPLE_RATIO` unless told
otherwise. Failed examples are kept whatever the ratio (see :mod:`dspex.observability.tracing`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from dspex.errors import ConfigurationError

__all__ = ["DEFAULT_SAMPLE_RATIO", "TracingSettings", "resolve"]

DEFAULT_SAMPLE_RATIO: Final = 0.01
"""The fraction of examples whose traces are kept when nothing says otherwise: 1 in 100, so a
1,000,000-example job sends about 10,000 traces (plus every failed example's)."""

TRACES_PATH: Final = "/v1/traces"
DEFAULT_EXPORT_TIMEOUT_S: Final = 3.0

_RATIO_OF_SAMPLER: Final[Mapping[str, float | None]] = {
    "always_on": 1.0,
    "parentbased_always_on": 1.0,
    "always_off": 0.0,
    "parentbased_always_off": 0.0,
    "traceidratio": None,  # None: OTEL_TRACES_SAMPLER_ARG
    "parentbased_traceidratio": None,
}


@dataclass(frozen=True)
class TracingSettings:
    """Tracing of this process (``dspex.configure(tracing=TracingSettings(...))``).

    ``endpoint``: the OTLP/HTTP receiver, a base URL (``http://collector:4318``) or the full traces
    URL (``.../v1/traces``); None: the ``OTEL_EXPORTER_OTLP_*`` variables. ``sample_ratio``: the
    fraction of new traces kept (0 to 1); None: ``OTEL_TRACES_SAMPLER(_ARG)``, else
    :data:`DEFAULT_SAMPLE_RATIO`. ``exporter``: an OpenTelemetry ``SpanExporter`` used instead of
    OTLP (an in-memory one in tests). ``export_timeout_s``: the longest one export may take; exports
    run on a background thread, so a slow or unreachable receiver never holds up a call.
    """

    endpoint: str | None = None
    sample_ratio: float | None = None
    service_name: str | None = None
    exporter: Any = None
    export_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S

    def __post_init__(self) -> None:
        ratio = self.sample_ratio
        if ratio is not None and not (isinstance(ratio, int | float) and 0.0 <= ratio <= 1.0):
            raise ConfigurationError(f"TracingSettings(sample_ratio={ratio!r}) needs a number from 0 to 1")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"TracingSettings(endpoint={self.endpoint!r}) needs an http:// or https:// URL "
                "(OTLP over HTTP)"
            )
        if not (self.export_timeout_s > 0 and math.isfinite(self.export_timeout_s)):
            raise ConfigurationError("TracingSettings(export_timeout_s=...) needs a positive number")

    @property
    def traces_url(self) -> str | None:
        """The URL spans are posted to (None when an ``exporter`` is given or no endpoint is known)."""
        if self.endpoint is None:
            return None
        base = self.endpoint.rstrip("/")
        return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def resolve(value: Any, env: Mapping[str, str] | None = None) -> TracingSettings | None:
    """``dspex.configure(tracing=value)``'s value as settings with every gap filled from ``env``
    (default ``os.environ``); None when tracing is to be off.

    ``value``: None or False (off), True (on, everything from the ``OTEL_*`` variables), an
    endpoint URL, or a :class:`TracingSettings`.
    """
    environ = os.environ if env is None else env
    if value is None or value is False:
        return None
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if value is True:
        settings = TracingSettings()
    elif isinstance(value, str):
        settings = TracingSettings(endpoint=value)
    elif isinstance(value, TracingSettings):
        settings = value
    else:
        raise ConfigurationError(
            "configure(tracing=...) needs None, a bool, an OTLP endpoint URL or a "
            f"dspex.TracingSettings, got {type(value).__module__}.{type(value).__qualname__}"
        )
    return _filled(settings, environ)


def _filled(settings: TracingSettings, env: Mapping[str, str]) -> TracingSettings:
    endpoint = settings.endpoint
    if endpoint is None and settings.exporter is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint:
            raise ConfigurationError(
                "tracing needs somewhere to send spans: an endpoint (configure(tracing='http://...'), "
                "--otlp-endpoint) or OTEL_EXPORTER_OTLP_ENDPOINT"
            )
    ratio = settings.sample_ratio if settings.sample_ratio is not None else sampler_ratio(env)
    service = settings.service_name or env.get("OTEL_SERVICE_NAME") or "dspex"
    return replace(settings, endpoint=endpoint, sample_ratio=ratio, service_name=service)


def sampler_ratio(env: Mapping[str, str]) -> float:
    """The ratio ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` ask for
    (:data:`DEFAULT_SAMPLE_RATIO` when unset); a value we cannot honour is a ConfigurationError."""
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    argument = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not name:
        return _ratio(argument) if argument else DEFAULT_SAMPLE_RATIO
    if name not in _RATIO_OF_SAMPLER:
        raise ConfigurationError(
            f"OTEL_TRACES_SAMPLER={name!r} is not one dspex supports: {', '.join(_RATIO_OF_SAMPLER)}"
        )
    fixed = _RATIO_OF_SAMPLER[name]
    if fixed is not None:
        return fixed
    return _ratio(argument) if argument else 1.0  # the OpenTelemetry default for a ratio sampler


def _ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ConfigurationError(f"OTEL_TRACES_SAMPLER_ARG={text!r} needs a number from 0 to 1")
    return ratio

"""Options every worker process has, declared once for every settings object that offers them.

`dspex worker predict|score|...` (:class:`~dspex.cli._worker_options.WorkerSettings`) and the
aggregator (:class:`~dspex.processors.aggregator_options.AggregatorOptions`) both serve /metrics
and join consumer groups; each annotates its field with one of these types, which carry the help,
bounds and flag spelling (:mod:`dspex._flags`), and gives the default.

    >>> from pydantic import BaseModel
    >>> class Options(BaseModel):
    ...     metrics_port: MetricsPort = None
    >>> Options(metrics_port=9401).metrics_port
    9401
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from dspex._flags import cli

__all__ = ["FastGroups", "MetricsHost", "MetricsPort", "TargetsDir"]

FastGroups = Annotated[
    bool,
    Field(
        description="Short consumer-group timing (6 s session) for tests and the dev broker; off = Kafka's.",
        json_schema_extra=cli("--fast-groups/--no-fast-groups", "DSPEX_FAST_GROUPS"),
    ),
]
MetricsPort = Annotated[
    int | None,
    Field(
        ge=1,
        le=65535,
        description="Port of /metrics (default: the first free port in 9400-9499). "
        "A port in use is an error.",
    ),
]
MetricsHost = Annotated[
    str, Field(description="Interface /metrics binds to; keep loopback unless you mean it.")
]
TargetsDir = Annotated[
    Path,
    Field(
        description="Where this process registers its /metrics for Prometheus file_sd discovery "
        "(removed on stop).",
        json_schema_extra=cli("--prometheus-targets-dir", "DSPEX_PROMETHEUS_TARGETS_DIR"),
    ),
]

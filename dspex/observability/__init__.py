"""Observability: Prometheus metrics, the /metrics server, group lag, and the live dashboard.

- :mod:`dspex.observability.metrics`: every metric dspex exports (listed at its top) and the small
  functions the rest of the code calls (``metrics.lm_request(model, outcome)``, ...);
- :mod:`dspex.observability.server`: a worker's /metrics endpoint and its file_sd target file;
- :mod:`dspex.observability.lag`: consumer-group lag and members through the admin API;
- :mod:`dspex.observability.aggregator`: what the aggregator process exports besides its work;
- :mod:`dspex.observability.dashboard`: ``dspex dashboard``, a page and JSON API over the status
  and workers topics.

Importing this package imports none of its submodules (the programming model imports ``metrics``
only, which needs nothing but prometheus-client).
"""

from __future__ import annotations

__all__: list[str] = []

"""Observability: Prometheus metrics, the callbacks that feed them, the /metrics server, group lag,
the callback events of predictions, and the live dashboard.

- :mod:`dspex.observability.metrics`: every metric dspex exports (listed at its top) and the small
  functions the workers and the Kafka layer call (``metrics.lm_request(model, outcome)``, ...);
- :mod:`dspex.observability.callbacks`: :class:`PrometheusCallback`, the LM metrics recorded from
  the programming model's callback events (the workers install it);
- :mod:`dspex.observability.recorder`: user callbacks in a worker, their events kept per prediction;
- :mod:`dspex.observability.server`: a worker's /metrics endpoint and its file_sd target file;
- :mod:`dspex.observability.lag`: consumer-group lag and members through the admin API;
- :mod:`dspex.observability.aggregator`: what the aggregator process exports besides its work;
- :mod:`dspex.observability.dashboard`: ``dspex dashboard``, a page and JSON API over the status
  and workers topics.

Importing this package imports none of its submodules. The programming model (``dspex.lm``,
modules, adapters, primitives, evaluate) imports nothing from here: instrumentation attaches through
its callbacks (:mod:`dspex.utils.callback`, :mod:`dspex.lm.events`).
"""

from __future__ import annotations

__all__: list[str] = []

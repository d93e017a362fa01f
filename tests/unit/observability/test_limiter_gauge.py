"""dspex_lm_limiter_limit is written only when the limit changed, and always holds the last one."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from dspex.observability.metrics import set_limiter_limit


def _gauge(endpoint: str) -> float | None:
    return REGISTRY.get_sample_value("dspex_lm_limiter_limit", {"endpoint": endpoint})


def test_the_gauge_follows_every_change_of_the_limit_and_skips_repeats() -> None:
    endpoint = f"http://limiter-gauge-{uuid.uuid4().hex[:8]}.test/v1"
    seen = []
    for limit in (32, 32, 64, 64, 64, 48, 32, 32):  # back to an earlier value too
        set_limiter_limit(endpoint, limit)
        seen.append(_gauge(endpoint))
    assert seen == [32, 32, 64, 64, 64, 48, 32, 32]


def test_endpoints_have_gauges_of_their_own() -> None:
    first, second = (f"http://limiter-gauge-{uuid.uuid4().hex[:8]}.test/v1" for _ in range(2))
    set_limiter_limit(first, 10)
    set_limiter_limit(second, 10)
    set_limiter_limit(second, 20)
    assert (_gauge(first), _gauge(second)) == (10, 20)

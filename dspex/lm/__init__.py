"""The LM client: OpenAI-compatible chat completions and embeddings with retries, a response cache,
usage and cost.

    from dspex.lm import LM, track_usage
    lm = LM("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    with track_usage() as run:
        response = lm.complete([{"role": "user", "content": "What is 2 + 3?"}])
    response.text, run.usage.cost_usd
"""

from __future__ import annotations

from dspex.lm.base import BaseLM
from dspex.lm.cache import Cache, configure_cache
from dspex.lm.cache import _get_dspy_cache as _get_dspy_cache  # DSPy's dspy.clients has it
from dspex.lm.client import LM, LMResponse, LMSettings
from dspex.lm.limiter import AdaptiveLimiter
from dspex.lm.pricing import ModelPrice, PriceTable, register_prices
from dspex.lm.retry import RetryPolicy
from dspex.lm.usage import Usage, UsageTracker, track_usage

__all__ = [
    "LM",
    "AdaptiveLimiter",
    "BaseLM",
    "Cache",
    "LMResponse",
    "LMSettings",
    "ModelPrice",
    "PriceTable",
    "RetryPolicy",
    "Usage",
    "UsageTracker",
    "configure_cache",
    "register_prices",
    "track_usage",
]

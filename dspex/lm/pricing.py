"""Prices in USD per million tokens, and the cost of a call.

The built-in table holds a few well-known models at the provider's published list prices when this was
written; prices change, so register your own (they win over the built-in ones):

    register_prices({"openai/gpt-4o-mini": (0.15, 0.60), "sim/arith": ModelPrice(1.0, 2.0)})

A model is looked up by its full id (``provider/name``) and by its name alone, the longest registered
key that is the id itself or a prefix of it ending at ``-``, ``:`` or ``@`` winning, so that a dated
version (``gpt-4o-mini-2024-07-18``) costs what its family costs. A model with no price (a simulation,
``sim/...``, or anything unknown) costs 0.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import NamedTuple

from dspex.errors import ConfigurationError

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable", "cost_of", "parse_price", "register_prices"]

_BOUNDARIES = ("-", ":", "@")


class ModelPrice(NamedTuple):
    """USD per one million input (prompt) and output (completion) tokens; ``batch_share``: the share
    of those prices a provider Batch API charges (OpenAI's and Anthropic's: half)."""

    input_per_million: float
    output_per_million: float = 0.0
    batch_share: float = 0.5


PriceLike = ModelPrice | tuple[float, float, float] | tuple[float, float] | tuple[float]

_BUILTIN: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "o3-mini": ModelPrice(1.10, 4.40),
    "o4-mini": ModelPrice(1.10, 4.40),
    "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
    "text-embedding-3-small": ModelPrice(0.02),
    "text-embedding-3-large": ModelPrice(0.13),
}


class PriceTable:
    """A mutable, thread-safe map from model id (or id prefix) to :class:`ModelPrice`."""

    def __init__(self, prices: Mapping[str, PriceLike] | None = None) -> None:
        self._lock = threading.Lock()
        self._prices: dict[str, ModelPrice] = {}
        self._found: dict[str, ModelPrice | None] = {}  # model -> its match; cleared on register
        if prices:
            self.register(prices)

    def register(self, prices: Mapping[str, PriceLike]) -> None:
        """Add or replace prices; values are ``ModelPrice`` or ``(input, output)`` per 1M tokens."""
        checked = {model: _as_price(model, price) for model, price in prices.items()}
        with self._lock:
            self._prices.update(checked)
            self._found.clear()

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or None when nothing registered matches it."""
        with self._lock:
            if model in self._found:  # every call of an LM asks for the same model
                return self._found[model]
            names = [model]
            if "/" in model:
                names.append(model.split("/", 1)[1])
            matches = [key for key in self._prices for name in names if _matches(key, name)]
            found = self._found[model] = self._prices[max(matches, key=len)] if matches else None
            return found

    def cost_of(
        self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False
    ) -> float:
        """USD for a call: tokens times price per token (price / 1e6); 0 for a model with no price.
        ``batch``: answered through the provider's Batch API, at ``batch_share`` of the price."""
        price = self.price_of(model)
        if price is None:
            return 0.0
        online = (
            prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million
        ) / 1e6
        return online * price.batch_share if batch else online

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price_of(model) is not None


def _matches(key: str, name: str) -> bool:
    if not name.startswith(key):
        return False
    rest = name[len(key) :]
    return rest == "" or rest.startswith(_BOUNDARIES)


def _as_price(model: str, price: PriceLike) -> ModelPrice:
    try:
        checked = ModelPrice(*(float(part) for part in price))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"price for {model!r} must be (input, output) USD per 1M tokens, got {price!r}"
        ) from exc
    if checked.input_per_million < 0 or checked.output_per_million < 0:
        raise ConfigurationError(f"price for {model!r} cannot be negative: {price!r}")
    if not 0 <= checked.batch_share <= 1:
        raise ConfigurationError(f"batch share of {model!r} must be within 0..1: {price!r}")
    return checked


DEFAULT_PRICES = PriceTable(_BUILTIN)
"""The process-wide table LMs price their calls with."""


def register_prices(prices: Mapping[str, PriceLike]) -> None:
    """Add or replace prices in the process-wide table (USD per 1M input / output tokens)."""
    DEFAULT_PRICES.register(prices)


def parse_price(spec: str) -> tuple[str, ModelPrice]:
    """``"MODEL=INPUT,OUTPUT"`` (USD per 1M prompt and completion tokens) as a model and its price,
    the form workers take prices in (``--price openai/my-model=0.4,1.6``); OUTPUT may be left out
    for an embedding model. A malformed spec is a ConfigurationError quoting it."""
    model, sep, numbers = spec.partition("=")
    if not sep or not model.strip() or not numbers.strip():
        raise ConfigurationError(f"price {spec!r} must be MODEL=INPUT,OUTPUT (USD per 1M tokens)")
    return model.strip(), _as_price(model.strip(), tuple(numbers.split(",")))  # type: ignore[arg-type]


def cost_of(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for a call to ``model`` by the process-wide table."""
    return DEFAULT_PRICES.cost_of(model, prompt_tokens, completion_tokens)

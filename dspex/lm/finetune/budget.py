"""Training prices and the training budget of a fine-tuning job.

    register_training_prices({"gpt-4o-mini": 3.00})           # USD per million training tokens
    OpenAIProvider(max_training_tokens=2_000_000, max_cost_usd=5.0)

A job trains on every token of its file once per epoch, so its size is estimated before the upload
as the file's tokens (about four characters each, the same rule as dspex's other estimates; a
provider's tokenizer counts somewhat differently) times ``n_epochs`` (when ``train_kwargs`` leaves
the number to the provider, :data:`DEFAULT_EPOCHS` is assumed, and the message says so). A job over
either limit is refused with the numbers before anything is sent. The built-in prices are OpenAI's
published training list prices when this was written (they change: register your own); a model with
no price costs 0 (a simulation, a local trainer), so only ``max_training_tokens`` limits it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError
from dspex.lm.pricing import ModelPrice, PriceTable

__all__ = [
    "DEFAULT_EPOCHS",
    "TRAINING_PRICES",
    "TrainingEstimate",
    "check_training_budget",
    "estimate_training",
    "register_training_prices",
]

DEFAULT_EPOCHS = 3
_CHARS_PER_TOKEN = 4

# USD per million training tokens (the table's input price; output prices do not apply).
TRAINING_PRICES = PriceTable(
    {
        "gpt-4o-mini": ModelPrice(3.00),
        "gpt-4o": ModelPrice(25.00),
        "gpt-4.1": ModelPrice(25.00),
        "gpt-4.1-mini": ModelPrice(5.00),
        "gpt-4.1-nano": ModelPrice(1.50),
        "gpt-3.5-turbo": ModelPrice(8.00),
    }
)


def register_training_prices(prices: Mapping[str, float]) -> None:
    """Add or replace training prices (USD per million training tokens) by model id or prefix."""
    TRAINING_PRICES.register({model: ModelPrice(float(price)) for model, price in prices.items()})


@dataclass(frozen=True)
class TrainingEstimate:
    """A job's estimated size: tokens per epoch, epochs (``assumed``: not given), total and USD."""

    file_tokens: int
    epochs: int
    assumed_epochs: bool
    tokens: int
    cost_usd: float

    def describe(self) -> str:
        epochs = f"{self.epochs} epochs{' (assumed)' if self.assumed_epochs else ''}"
        return f"~{self.tokens:,} training tokens ({epochs} x ~{self.file_tokens:,}), ~${self.cost_usd:.2f}"


def estimate_training(model: str, file_bytes: int, hyperparameters: Mapping[str, Any]) -> TrainingEstimate:
    """The estimate for a training file of ``file_bytes`` bytes of ``model`` (its id or name)."""
    epochs = hyperparameters.get("n_epochs")
    assumed = not (isinstance(epochs, int) and epochs > 0)
    count = DEFAULT_EPOCHS if assumed else int(epochs)  # type: ignore[arg-type]
    file_tokens = -(-file_bytes // _CHARS_PER_TOKEN)
    tokens = file_tokens * count
    return TrainingEstimate(file_tokens, count, assumed, tokens, TRAINING_PRICES.cost_of(model, tokens, 0))


def check_training_budget(
    estimate: TrainingEstimate, model: str, *, max_tokens: int | None, max_cost_usd: float | None
) -> None:
    """ConfigurationError with the numbers when the estimate is over either limit."""
    if max_tokens is not None and estimate.tokens > max_tokens:
        raise ConfigurationError(
            f"fine-tuning {model} would train {estimate.describe()}: over "
            f"max_training_tokens={max_tokens:,}; nothing was uploaded"
        )
    if max_cost_usd is not None and estimate.cost_usd > max_cost_usd:
        raise ConfigurationError(
            f"fine-tuning {model} would train {estimate.describe()}: over max_cost_usd=${max_cost_usd:.2f}; "
            "nothing was uploaded"
        )

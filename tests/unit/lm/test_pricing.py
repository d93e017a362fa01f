"""Cost arithmetic and price lookup."""

from __future__ import annotations

import pytest

from dspex.errors import ConfigurationError
from dspex.lm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable, cost_of, register_prices


def test_cost_is_tokens_times_price_per_million() -> None:
    table = PriceTable({"acme/model": (2.0, 8.0)})
    assert table.cost_of("acme/model", 1_000_000, 0) == pytest.approx(2.0)
    assert table.cost_of("acme/model", 1_500, 250) == pytest.approx((1_500 * 2.0 + 250 * 8.0) / 1e6)


def test_builtin_prices_cover_well_known_models() -> None:
    assert DEFAULT_PRICES.price_of("openai/gpt-4o-mini") == ModelPrice(0.15, 0.60)
    assert cost_of("openai/gpt-4o-mini", 1000, 1000) == pytest.approx((1000 * 0.15 + 1000 * 0.60) / 1e6)


def test_longest_prefix_at_a_boundary_wins() -> None:
    table = PriceTable({"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "gpt-4": (30.0, 60.0)})
    assert table.price_of("openai/gpt-4o-mini-2024-07-18") == ModelPrice(0.15, 0.6)
    assert table.price_of("openai/gpt-4o-2024-08-06") == ModelPrice(2.5, 10.0)
    assert table.price_of("gpt-4") == ModelPrice(30.0, 60.0)
    assert table.price_of("gpt-4.5") is None  # "gpt-4" is a prefix, but not at a boundary


def test_full_id_is_preferred_over_the_bare_name() -> None:
    table = PriceTable({"gpt-4o-mini": (0.15, 0.6), "azure/gpt-4o-mini": (0.2, 0.8)})
    assert table.price_of("azure/gpt-4o-mini") == ModelPrice(0.2, 0.8)
    assert table.price_of("openai/gpt-4o-mini") == ModelPrice(0.15, 0.6)


def test_simulated_and_unknown_models_cost_nothing_unless_registered() -> None:
    table = PriceTable()
    assert table.cost_of("sim/arith", 1000, 1000) == 0.0
    assert "sim/arith" not in table
    table.register({"sim/arith": ModelPrice(1.0, 2.0)})
    assert table.cost_of("sim/arith", 1000, 500) == pytest.approx(0.002)


def test_register_prices_changes_the_process_table() -> None:
    register_prices({"test-pricing/unique-model-7": (3.0, 4.0)})
    assert cost_of("test-pricing/unique-model-7", 1_000_000, 1_000_000) == pytest.approx(7.0)


@pytest.mark.parametrize("bad", [("cheap", 1.0), (-1.0, 1.0), None])
def test_bad_prices_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="price for 'm'"):
        PriceTable().register({"m": bad})  # type: ignore[dict-item]

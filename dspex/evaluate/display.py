"""What an evaluation shows while and after it runs: a progress bar on stderr, and DSPy's results table.

The table has DSPy's rows (example fields, prediction fields, then the metric column marked
``✔️ [score]``, cells cut to 25 words). It is printed with pandas when pandas is installed, as DSPy
does, else with rich (DSPy would skip it with a warning).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from dspex.lm.usage import Usage

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Progress", "ProgressBar", "construct_result_table", "print_result_table", "truncate_cell"]

_MAX_WORDS = 25


class ProgressBar:
    """A rich bar on stderr: done/total, score, errors, tokens, cost and rate; a no-op when off.

    The one bar of dspex: local evaluations (:class:`Progress`) and jobs followed through the
    cluster (``dspex.client.progress.JobProgress``) both show theirs with it.
    """

    def __init__(
        self, label: str, total: int | None, *, enabled: bool, unit: str = "ex/s", with_state: bool = False
    ) -> None:
        self._bar: Any = _rich_bar(unit, with_state) if enabled else None
        self._task: Any = None
        self._label, self._total = label, total
        self._started = time.perf_counter()

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
            fields = {"score": 0.0, "errors": 0, "tokens": 0, "cost": 0.0, "rate": 0.0, "state": "pending"}
            self._task = self._bar.add_task(self._label, total=self._total, **fields)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def show(
        self,
        *,
        done: int,
        score: float,
        errors: int,
        tokens: int,
        cost: float,
        total: int | EllipsisType | None = ...,
        state: str | None = None,
    ) -> None:
        """Show ``done`` items finished (``score`` in percent); a ``total`` given replaces the bar's
        (None: unknown)."""
        if self._bar is None:
            return
        elapsed = time.perf_counter() - self._started
        fields: dict[str, Any] = {
            "completed": done,
            "score": score,
            "errors": errors,
            "tokens": tokens,
            "cost": cost,
            "rate": done / elapsed if elapsed > 0 else 0.0,
        }
        if total is not ...:
            fields["total"] = total
        if state is not None:
            fields["state"] = state
        self._bar.update(self._task, **fields)


class Progress:
    """A local evaluation's bar: fed one finished example at a time. ``listener`` hears each one
    too (keywords ``done``, ``score_sum``, ``errors``, ``usage``: MLflow's progress steps)."""

    def __init__(self, total: int, enabled: bool, listener: Callable[..., None] | None = None) -> None:
        self._bar = ProgressBar("Evaluate", total, enabled=enabled)
        self._listener = listener

    def __enter__(self) -> Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.__exit__(*exc_info)

    def advance(self, *, done: int, score_sum: float, errors: int, usage: Usage) -> None:
        """One more example finished; ``done`` of them so far, scoring ``score_sum`` in all."""
        if self._listener is not None:
            self._listener(done=done, score_sum=score_sum, errors=errors, usage=usage)
        score = 100.0 * score_sum / done if done else 0.0
        self._bar.show(done=done, score=score, errors=errors, tokens=usage.total_tokens, cost=usage.cost_usd)


def _rich_bar(unit: str, with_state: bool) -> Any:
    from rich.console import Console  # rich only when a bar is asked for: keeps `import dspex` light
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    state = [TextColumn("{task.fields[state]}")] if with_state else []
    return RichProgress(
        TextColumn("[bold]{task.description}"),
        *state,
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("score {task.fields[score]:.1f}%"),
        TextColumn("errors {task.fields[errors]}"),
        TextColumn("{task.fields[tokens]:,} tokens"),
        TextColumn("${task.fields[cost]:.4f}"),
        TextColumn(f"{{task.fields[rate]:.0f}} {unit}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
    )


# --------------------------------------------------------------------------- the results table


def truncate_cell(content: Any) -> Any:
    """A cell cut to its first 25 words (``...`` after); shorter content is returned unchanged."""
    words = str(content).split()
    return " ".join(words[:_MAX_WORDS]) + "..." if len(words) > _MAX_WORDS else content


def _metric_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"✔️ [{value:.3f}]"
    return "" if value is None else f"✔️ [{value}]"


def construct_result_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """DSPy's result DataFrame: one row per example, every cell cut to 25 words (needs pandas)."""
    import pandas as pd  # optional, as in DSPy: only the table needs it

    frame = pd.DataFrame(rows)
    return frame.map(truncate_cell) if hasattr(frame, "map") else frame.applymap(truncate_cell)


def print_result_table(rows: list[dict[str, Any]], metric_name: str, display_table: bool | int) -> None:
    """Print the table (``display_table`` rows of it when an int), then how many rows were left out."""
    limit = None if isinstance(display_table, bool) else int(display_table)
    shown = rows if limit is None else rows[:limit]
    shown = [{**row, metric_name: _metric_cell(row.get(metric_name))} for row in shown]
    if importlib.util.find_spec("pandas") is not None:
        _print_with_pandas(shown)
    else:
        _print_with_rich(shown)
    left_out = len(rows) - len(shown)
    if left_out > 0:
        print(f"... {left_out} more rows not displayed ...")


def _print_with_pandas(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None):
        print(construct_result_table(rows))


def _print_with_rich(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(truncate_cell(row.get(column, ""))) for column in columns))
    Console().print(table)

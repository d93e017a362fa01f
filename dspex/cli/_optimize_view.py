"""What `dspex optimize` shows: progress while the optimization runs, a summary when it ends.

Progress counts the candidates evaluated (the trials of the job's status) out of the number the
optimizer will try when its knobs say it (BootstrapFewShotWithRandomSearch: ``num_candidate_programs``
plus its three fixed seeds), else just the count; and the optimizer's step. On a terminal it is a live
bar whose clock ticks between statuses; elsewhere (CI logs, pipes) one line per new status.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import typer
from rich.console import Console

from dspex.cli._ids import duration
from dspex.errors import ConfigurationError
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.optimizers.registry import optimizer_class
from dspex.schemas import OptimizeStatus, TrialRecord

__all__ = ["Baseline", "OptimizeProgress", "baseline_of", "planned_candidates", "summary"]

_SEEDS_BEFORE_RANDOM = 3  # zero-shot, labeled-only and unshuffled bootstrap (seeds -3, -2, -1)


def planned_candidates(
    optimizer: str, knobs: Mapping[str, Any], compile_options: Mapping[str, Any]
) -> int | None:
    """How many candidates the optimizer will evaluate, when its settings say so; else None.

    Only BootstrapFewShotWithRandomSearch states it (without ``restrict``); the others decide as
    they go (MIPROv2's minibatches, SIMBA's and COPRO's proposals), so their count stays open.
    """
    try:
        cls = optimizer_class(optimizer)
    except ConfigurationError:  # refused before submitting anyway
        return None
    if not issubclass(cls, BootstrapFewShotWithRandomSearch) or compile_options.get("restrict") is not None:
        return None
    default = inspect.signature(cls.__init__).parameters["num_candidate_programs"].default
    count = knobs.get("num_candidate_programs", default)
    return int(count) + _SEEDS_BEFORE_RANDOM if isinstance(count, int) else None


def _candidates(steps: list[TrialRecord]) -> int:
    return len({trial.candidate_id for trial in steps if trial.candidate_id} or range(len(steps)))


class OptimizeProgress:
    """Progress of one optimization on stderr, fed with its statuses (``update``)."""

    def __init__(self, job_id: str, planned: int | None, *, label: str | None = None) -> None:
        self._label = label or f"optimize {job_id[:12]}"
        self._planned = planned
        self._console = Console(stderr=True)
        self._live = self._console.is_terminal
        self._bar: Any = None
        self._task: Any = None
        self._last_seq: int | None = None
        self._started = time.perf_counter()

    def __enter__(self) -> OptimizeProgress:
        if self._live:
            self._bar = _rich_bar(self._console)
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self._planned, **_fields(None, self._planned))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, status: Any) -> None:
        """Show ``status`` (an OptimizeStatus; anything else is ignored)."""
        if not isinstance(status, OptimizeStatus) or status.seq == self._last_seq:
            return
        self._last_seq = status.seq
        if self._bar is not None:
            done = _candidates(status.steps)
            self._bar.update(self._task, completed=done, **_fields(status, self._planned))
            return
        fields = _fields(status, self._planned)
        elapsed = duration(time.perf_counter() - self._started)
        typer.echo(
            f"{self._label}: {fields['state']}, {fields['count']}, {fields['step']}, best {fields['best']}, "
            f"{fields['calls']} LM calls, {fields['tokens']} tokens, ${fields['cost']}, {elapsed}",
            err=True,
        )


def _fields(status: OptimizeStatus | None, planned: int | None) -> dict[str, str]:
    done = 0 if status is None else _candidates(status.steps)
    count = f"{done}/{planned} candidates" if planned else f"{done} candidates"
    best = "-" if status is None or status.best_score is None else f"{status.best_score:.1f}%"
    usage = None if status is None else status.usage
    return {
        "state": "pending" if status is None else status.state,
        "count": count,
        # seq counts the optimizer's steps (one more on the terminal status).
        "step": "step 0" if status is None else f"step {status.seq}",
        "best": best,
        "calls": f"{usage.lm_calls:,}" if usage else "0",
        "tokens": f"{usage.total_tokens:,}" if usage else "0",
        "cost": f"{usage.cost_usd:.4f}" if usage else "0.0000",
    }


def _rich_bar(console: Console) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[step]}"),
        TextColumn("best {task.fields[best]}"),
        TextColumn("{task.fields[calls]} LM calls"),
        TextColumn("{task.fields[tokens]} tokens"),
        TextColumn("${task.fields[cost]}"),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=4,
    )


# --------------------------------------------------------------------------- the closing summary


@dataclass(frozen=True)
class Baseline:
    """The score to compare the best against, and what it is the score of."""

    score: float | None
    what: str


def baseline_of(status: OptimizeStatus, student_id: str) -> Baseline:
    """The student's own score when a trial evaluated it unchanged, else the first full evaluation's."""
    scored = [trial for trial in status.steps if trial.score is not None]
    own = next((trial for trial in scored if trial.candidate_id == student_id), None)
    if own is not None:
        return Baseline(own.score, "the program as given")
    first = next((trial for trial in scored if trial.kind == "full"), None)
    if first is not None:
        return Baseline(first.score, f"the first candidate evaluated, {first.candidate_id[:12]}")
    return Baseline(None, "no candidate was scored")


def summary(status: OptimizeStatus, *, student_id: str, wall_s: float, saved: str | None) -> str:
    """The lines `dspex optimize` ends with: scores, candidates, usage, time, where the program went."""
    base = baseline_of(status, student_id)
    head = f"optimization {status.job_id}{f' ({status.name})' if status.name else ''} {status.state}"
    best = "-" if status.best_score is None else f"{status.best_score:.2f}"
    baseline = "-" if base.score is None else f"{base.score:.2f}"
    best_id = f" (candidate {status.best_candidate_id[:12]})" if status.best_candidate_id else ""
    trials = len(status.steps)
    tried = _candidates(status.steps)
    usage = status.usage
    lines = [
        head + (f": {status.reason}" if status.reason else ""),
        f"  score: {baseline} -> {best}{best_id}; baseline: {base.what}",
        f"  candidates tried: {tried}" + (f" ({trials} evaluations)" if trials != tried else ""),
        f"  LM calls: {usage.lm_calls:,} ({usage.cache_hits:,} from cache); tokens: {usage.total_tokens:,}; "
        f"cost: ${usage.cost_usd:.4f}",
        f"  wall time: {duration(wall_s)}",
    ]
    if saved is not None:
        lines.append(f"  best program: {saved}")
    return "\n".join(lines)

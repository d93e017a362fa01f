"""The parents' minibatch runs of the next few iterations, made together in one round trip.

Each gepa iteration starts by running the parent it selects on a minibatch of the trainset; most
iterations end there (the parent was perfect on it) or with a rejected child, and neither changes
gepa's state. So while no candidate is added, the next iterations select their parents and draw
their minibatches exactly as a copy of the candidate selector and batch sampler (with their shared
random generator) predicts from the same state. :func:`prefetch_parents` runs those predicted
(parent, minibatch) pairs in one batch when the current iteration's parent minibatch is not in the
adapter's :class:`~dspex.optimizers.gepa.adapter.RunMemo` yet; the iterations then take their
parents' runs from the memo instead of each waiting for its own round trip.

Nothing of gepa's decisions changes: the copies draw from copied generators, the real iterations
still select, sample, count their metric calls and apply their acceptance rule themselves, and a
memo hit is the run those iterations would have made (see ``reuse_runs`` in :mod:`.gepa`). What a
prediction costs when a candidate is added in between: the predicted runs of parents that are not
selected after all, made for nothing (at most :data:`LOOKAHEAD` minibatches' worth per added
candidate, counted in the run's LM usage and USD cap like any call).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["LOOKAHEAD", "predicted_tasks", "prefetch_parents"]

logger = logging.getLogger(__name__)

# Iterations whose parents' minibatches are run together (the current one included).
LOOKAHEAD = 8


class _StateAt:
    """gepa's state as a later iteration would read it when no candidate was added before it."""

    def __init__(self, state: Any, iteration: int) -> None:
        self._state = state
        self.i = iteration

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def predicted_tasks(proposer: Any, state: Any, rounds: int) -> list[tuple[dict[str, str], list[Any]]]:
    """The (parent candidate, minibatch) pairs of this iteration and the next ``rounds - 1``, as
    they will be drawn if no candidate is added meanwhile (from copies: nothing real is drawn)."""
    selector, sampler = copy.deepcopy((proposer.candidate_selector, proposer.batch_sampler))
    tasks: list[tuple[dict[str, str], list[Any]]] = []
    for ahead in range(rounds):
        view = _StateAt(state, state.i + ahead)
        for task in proposer.sampling_strategy.sample_tasks(view, selector, sampler, proposer.trainset):
            tasks.append((task.parent_candidate, list(task.minibatch)))
    return tasks


def prefetch_parents(proposer: Any, adapter: Any, state: Any, rounds: int = LOOKAHEAD) -> int:
    """Run the predicted parents' minibatches missing from the memo (see the module) when the
    current iteration would wait for its own; returns how many runs were started."""
    memo = getattr(adapter, "memo", None)
    if memo is None or rounds < 1:
        return 0
    try:
        tasks = predicted_tasks(proposer, state, rounds)
    except Exception as exc:  # a user's selector or sampler that cannot be copied: no prediction
        logger.debug("no prefetch of parent minibatches: %s: %s", type(exc).__name__, exc)
        return 0
    current = len(tasks) // rounds
    if all(_known(memo, candidate, batch) for candidate, batch in tasks[:current]):
        return 0  # this iteration waits for nothing: predict again when it would
    items = _missing(memo, tasks)
    if items:
        adapter.batch_evaluate(items, capture_traces=True)
    return sum(len(batch) for _, batch in items)


def _known(memo: Any, candidate: dict[str, str], batch: Sequence[Any]) -> bool:
    return len(memo.lookup(candidate, batch, True)) == len(batch)


def _missing(
    memo: Any, tasks: Sequence[tuple[dict[str, str], list[Any]]]
) -> list[tuple[dict[str, str], list[Any]]]:
    """One item per candidate: its predicted examples with no run in the memo, each once."""
    wanted: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], dict[int, Any]]] = {}
    for candidate, batch in tasks:
        known = memo.lookup(candidate, batch, True)
        _, examples = wanted.setdefault(tuple(sorted(candidate.items())), (candidate, {}))
        for index, example in enumerate(batch):
            if index not in known:
                examples.setdefault(id(example), example)
    return [(candidate, list(examples.values())) for candidate, examples in wanted.values() if examples]

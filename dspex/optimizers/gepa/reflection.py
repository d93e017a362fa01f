"""The reflections of one gepa iteration, all at once.

With several proposals per iteration (``sampling_strategy``), gepa 0.1.4 asks an adapter that
proposes texts itself (``adapter.propose_new_texts``) for one proposal after another, so each
proposal's reflection LM call waits for the previous one. A reflection *strategy* with
``reflect_many`` gets all of the iteration's jobs in one call instead: :class:`ConcurrentReflection`
runs the adapter's proposer for every job at the same time (each in its own thread, whose LM calls
go to dspex's event loop) and returns the proposals in job order, so the run's trajectory is the
same as with one reflection after another. The proposer gepa builds sees the adapter through
:class:`ProposerView`, which hides ``propose_new_texts`` so that gepa takes this path.

A job whose proposer raises (an unusable reflection answer, twice) makes ``reflect_many`` raise;
gepa then asks again job by job (:meth:`ConcurrentReflection.reflect`), records the failed job as
no proposal and keeps the others: the same outcome as one reflection after another, at the cost of
asking the other jobs again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from gepa.proposer.reflective_mutation.reflection_lm import ReflectionJob, ReflectionProposal

from dspex.optimizers.gepa import _threads
from dspex.optimizers.gepa.adapter import DspyAdapter, GepaBatch

__all__ = ["ConcurrentReflection", "ProposerView"]


class ConcurrentReflection:
    """gepa's ``BatchReflectionLM`` over the adapter's proposer (see the module)."""

    def __init__(self, adapter: DspyAdapter) -> None:
        self.adapter = adapter

    def reflect(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> tuple[ReflectionProposal, ConcurrentReflection]:
        texts = self.adapter.propose_new_texts(candidate, reflective_dataset, components_to_update)
        return ReflectionProposal(new_texts=texts), self

    def reflect_many(
        self, jobs: list[ReflectionJob]
    ) -> list[tuple[ReflectionProposal, ConcurrentReflection]]:
        if len(jobs) <= 1:
            return [self.reflect(*job) for job in jobs]

        # each call runs in a copy of the caller's context: the LM, settings and usage trackers
        return _threads.run_all([functools.partial(self.reflect, *job) for job in jobs])


class ProposerView:
    """The adapter as gepa's reflective proposer sees it: ``batch_evaluate`` and
    ``make_reflective_dataset`` (all it calls besides ``propose_new_texts``, which is hidden)."""

    propose_new_texts = None

    def __init__(self, adapter: DspyAdapter) -> None:
        self.adapter = adapter

    def batch_evaluate(self, items: Sequence[Any], *, capture_traces: bool = True) -> list[GepaBatch]:
        return self.adapter.batch_evaluate(items, capture_traces=capture_traces)

    def evaluate(
        self, batch: Sequence[Any], candidate: Mapping[str, str], capture_traces: bool = False
    ) -> GepaBatch:
        return self.adapter.evaluate(batch, candidate, capture_traces=capture_traces)

    def make_reflective_dataset(
        self, candidate: Mapping[str, str], eval_batch: GepaBatch, components_to_update: list[str]
    ) -> dict[str, Any]:
        return dict(self.adapter.make_reflective_dataset(candidate, eval_batch, components_to_update))

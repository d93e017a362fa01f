"""MIPROv2's search over (instruction, demo set) choices per predictor: optuna's TPE, rebuilt from JSON.

    search = SearchRecord(num_predictors=2, num_instructions=[3, 3], num_demo_sets=[6, 6])
    study = search.study(seed=9, next_number=6)    # every recorded trial added back, TPE seeded
    trials = [study.ask() for _ in range(5)]; params = [search.suggest(t) for t in trials]
    ... evaluate ...; study.tell(trial, score) for each, in trial order; search.record(...)

The study is not kept between steps: it is rebuilt from the recorded trials (``create_trial`` +
``add_trial``) whenever the sampler is asked, with a TPE sampler seeded from the run's seed and the
number of the trial it will give. So a run resumed from a checkpoint asks exactly what the
uninterrupted run asked: the sampler's state is a function of the JSON record.

TPE samples at random until the study holds ``TPE_STARTUP_TRIALS`` finished trials (the default
program and the full evaluations count, as they do in DSPy's study); only trials asked after that
depend on the scores told. A trial numbered ``k`` is asked, in DSPy's loop, when trials ``0..k-1``
are finished, so trials numbered below ``TPE_STARTUP_TRIALS`` are random draws whatever was told:
they can be asked together (:func:`ask_batch` seeds each by its own number, so a batch asks what
one-at-a-time asking asks), and every later trial must wait for all the scores before it.

Parameters are DSPy's: ``"{i}_predictor_instruction"`` and ``"{i}_predictor_demos"`` (the latter
only when demos are searched), categorical over candidate indices.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import optuna

from dspex.optimizers.checkpoint import SearchState, ToldTrial

__all__ = ["TPE_STARTUP_TRIALS", "Params", "SearchRecord", "ask_batch", "combo_key"]

Params = dict[str, int]
# optuna's default ``n_startup_trials``, which DSPy's sampler uses: finished trials before TPE models
TPE_STARTUP_TRIALS = 10

# optuna logs every trial at INFO on its own handler; the run's history already says it all.
optuna.logging.set_verbosity(optuna.logging.WARNING)


def combo_key(params: Mapping[str, int]) -> str:
    """The combination's key (params in predictor order), for averaging its minibatch scores."""
    return ",".join(f"{name}={params[name]}" for name in params)


@dataclass
class SearchRecord:
    """Every trial told to the search so far, and the minibatch scores of each combination."""

    num_instructions: list[int]
    num_demo_sets: list[int] | None  # None: zero-shot, only instructions are searched
    told: list[ToldTrial] = field(default_factory=list)  # in trial order
    minibatch_scores: dict[str, list[float]] = field(default_factory=dict)  # combo key -> scores
    combos: dict[str, Params] = field(default_factory=dict)  # combo key -> params (first seen order)
    fully_evaluated: dict[str, float] = field(default_factory=dict)  # combo key -> full score

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        found: dict[str, optuna.distributions.BaseDistribution] = {}
        for i, count in enumerate(self.num_instructions):
            found[f"{i}_predictor_instruction"] = optuna.distributions.CategoricalDistribution(range(count))
            if self.num_demo_sets is not None:
                sets = range(self.num_demo_sets[i])
                found[f"{i}_predictor_demos"] = optuna.distributions.CategoricalDistribution(sets)
        return found

    def default_params(self) -> Params:
        return dict.fromkeys(self.distributions(), 0)

    def study(self, seed: int, next_number: int) -> optuna.Study:
        """A study holding every trial told so far, its sampler seeded for trial ``next_number``."""
        sampler_seed = zlib.crc32(f"mipro:{seed}:{next_number}".encode())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate=True
            sampler = optuna.samplers.TPESampler(
                seed=sampler_seed, multivariate=True, n_startup_trials=TPE_STARTUP_TRIALS
            )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        distributions = self.distributions()
        for entry in self.told:
            study.add_trial(
                optuna.trial.create_trial(
                    params=entry["params"], distributions=distributions, value=entry["value"]
                )
            )
        return study

    def suggest(self, trial: optuna.Trial) -> Params:
        """The trial's choices, asked in DSPy's order (per predictor: instruction, then demo set)."""
        params: Params = {}
        for i, count in enumerate(self.num_instructions):
            name = f"{i}_predictor_instruction"
            params[name] = int(trial.suggest_categorical(name, list(range(count))))
            if self.num_demo_sets is not None:
                name = f"{i}_predictor_demos"
                params[name] = int(trial.suggest_categorical(name, list(range(self.num_demo_sets[i]))))
        return params

    def tell(self, number: int, params: Params, value: float) -> None:
        self.told.append(ToldTrial(number=number, params=dict(params), value=float(value)))

    def add_minibatch(self, params: Params, score: float) -> None:
        key = combo_key(params)
        self.combos.setdefault(key, dict(params))
        self.minibatch_scores.setdefault(key, []).append(float(score))

    def best_untried(self, passing_over: str | None = None) -> tuple[str, Params, float] | None:
        """The combination with the highest mean minibatch score not yet fully evaluated (of equal
        means the first seen), or None when every one was; ``passing_over``: a key not to give."""
        ranked = sorted(
            self.minibatch_scores.items(), key=lambda item: sum(item[1]) / len(item[1]), reverse=True
        )
        for key, scores in ranked:
            if key not in self.fully_evaluated and key != passing_over:
                return key, self.combos[key], sum(scores) / len(scores)
        return None

    def state(self) -> SearchState:
        """The record as its checkpoint holds it (the space, ``num_*``, is rebuilt by the run)."""
        return SearchState(
            told=self.told,
            minibatch_scores=self.minibatch_scores,
            combos=self.combos,
            fully_evaluated=self.fully_evaluated,
        )

    def load(self, state: SearchState) -> None:
        self.told = list(state.told)
        self.minibatch_scores = {key: list(scores) for key, scores in state.minibatch_scores.items()}
        self.combos = dict(state.combos)
        self.fully_evaluated = dict(state.fully_evaluated)


def ask_batch(record: SearchRecord, seed: int, numbers: Sequence[int]) -> list[Params]:
    """The choices of the sampled trials ``numbers``, asked together before any is told.

    Each is asked of a study seeded for its own number: a trial numbered below
    ``TPE_STARTUP_TRIALS`` is then the same random draw whether it is asked alone or in a batch (the
    sampler ignores the scores until then). The trials are left running in the throwaway studies;
    the caller tells the record their scores in trial order once they are evaluated.
    """
    return [record.suggest(record.study(seed, number).ask()) for number in numbers]

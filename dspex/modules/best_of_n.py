"""``BestOfN``: run a module up to N times as distinct rollouts and keep the best-rewarded prediction.

    def one_word(inputs: dict, pred: dspex.Prediction) -> float:
        return 1.0 if len(str(pred.answer).split()) == 1 else 0.0

    best = BestOfN(ChainOfThought("question -> answer"), N=3, reward_fn=one_word, threshold=1.0)
    pred = await best.acall(question="What is the capital of Belgium?")

Attempt ``i`` calls a copy of the module whose predictors send ``rollout_id = start + i`` (the
request's ``seed``; ``start`` is a predictor's own configured ``rollout_id``, else 0) at a non-zero
temperature, so even a deterministic or cached LM gives each attempt its own answer. It stops at the
first attempt whose reward reaches ``threshold``, else returns the best one. The trace of the returned
prediction holds the steps of the kept attempt only; usage counts every attempt.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dspex.configuration import context, current_settings
from dspex.errors import ConfigurationError, LMError, ProgramLoadError
from dspex.primitives import Module, Prediction, detached_trace, record_trace_step
from dspex.serialization import import_object, import_path_of

__all__ = ["DEFAULT_ROLLOUT_TEMPERATURE", "Attempt", "BestOfN", "RewardFn"]

logger = logging.getLogger(__name__)

RewardFn = Callable[[dict[str, Any], Prediction], Any]  # -> float, or an awaitable of one
# What rollouts use when the LM's own temperature is 0 (DSPy always uses 1.0).
DEFAULT_ROLLOUT_TEMPERATURE: Final = 1.0


@dataclass
class Attempt:
    """One finished attempt: its prediction, reward, the rollout copy that produced it, and the
    ``(predictor, inputs, prediction)`` entries its predictors added to DSPy's trace."""

    prediction: Prediction
    reward: float
    rollout: Module
    settings_trace: list[Any] = field(default_factory=list)


class BestOfN(Module):
    """Up to ``N`` rollouts of ``module``; the first with ``reward_fn(inputs, pred) >= threshold`` wins,
    else the highest reward.

    Temperature of the rollouts: ``temperature=`` if given; else each predictor's configured
    temperature (its config, or its LM's) when that is non-zero; else **1.0**, because N rollouts at
    temperature 0 would mostly repeat one answer. This is the one setting BestOfN changes, and only for
    its rollouts. ``reward_fn`` may be sync or async; an attempt that raises (the module or the reward
    function) counts as a failure: after more than ``fail_count`` failures (default ``N``) the error is
    raised, as it is when every attempt failed. A :class:`ConfigurationError` or systemic LM error
    (401/404) is raised at once. Saved programs name ``reward_fn`` by import path.
    """

    program_alias: ClassVar[str | None] = "dspex.BestOfN"

    def __init__(
        self,
        module: Module,
        N: int,
        reward_fn: RewardFn,
        threshold: float,
        fail_count: int | None = None,
        *,
        temperature: float | None = None,
    ) -> None:
        if not isinstance(module, Module):
            raise ConfigurationError(
                f"{type(self).__name__} needs a dspex Module, got {type(module).__name__}"
            )
        self._configure(N, reward_fn, threshold, fail_count, temperature)
        self.module = module

    def _configure(self, n: Any, reward_fn: Any, threshold: Any, fail_count: Any, temperature: Any) -> None:
        kind = type(self).__name__
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"{kind} N must be an integer >= 1, got {n!r}")
        if not callable(reward_fn):
            raise ConfigurationError(
                f"{kind} reward_fn must be callable(inputs, prediction), got {reward_fn!r}"
            )
        if fail_count is not None and (isinstance(fail_count, bool) or not isinstance(fail_count, int)):
            raise ConfigurationError(f"{kind} fail_count must be None or an integer, got {fail_count!r}")
        if temperature is not None and not (isinstance(temperature, int | float) and temperature > 0):
            raise ConfigurationError(f"{kind} temperature must be None or > 0, got {temperature!r}")
        self.N = n
        self.reward_fn = reward_fn
        self.threshold = float(threshold)
        self.fail_count = n if fail_count is None else fail_count
        self.temperature = temperature

    async def aforward(self, **inputs: Any) -> Prediction:
        """Run the attempts; return the kept prediction."""
        best: Attempt | None = None
        failures, advice = 0, None
        for index in range(self.N):
            try:
                attempt = await self._attempt(index, inputs, advice)
            except Exception as exc:
                failures += 1
                self._on_failure(exc, index, failures, last=index == self.N - 1 and best is None)
                continue
            if best is None or attempt.reward > best.reward:
                best = attempt
            if attempt.reward >= self.threshold or index == self.N - 1:
                break
            try:
                advice = await self.feedback(inputs, attempt)
            except Exception as exc:  # as in DSPy: a failure of this attempt, whose prediction still counts
                failures += 1
                self._on_failure(exc, index, failures, last=False)
        if best is None:  # only reached with N attempts all failed, which _on_failure raises for
            raise ConfigurationError(f"{type(self).__name__}: no attempt succeeded")
        self._keep_trace(best)
        return Prediction(best.prediction)

    async def _attempt(self, index: int, inputs: dict[str, Any], advice: Any) -> Attempt:
        rollout = self.rollout(index)
        self.prepare(rollout, advice)
        # Each attempt gets DSPy's trace list of its own; the kept attempt's goes to the caller's.
        own_trace: list[Any] | None = [] if current_settings().trace is not None else None
        with detached_trace(), context(trace=own_trace):
            prediction = await rollout.acall(**inputs)
        reward = self.reward_fn(dict(inputs), prediction)
        if inspect.isawaitable(reward):
            reward = await reward
        logger.debug("%s attempt %d: reward %s", type(self).__name__, index, reward)
        return Attempt(prediction, float(reward), rollout, own_trace or [])

    def _on_failure(self, exc: Exception, index: int, failures: int, *, last: bool) -> None:
        if isinstance(exc, ConfigurationError) or (isinstance(exc, LMError) and exc.systemic):
            raise exc  # every attempt would fail the same way
        logger.warning(
            "%s: attempt %d failed: %s: %s", type(self).__name__, index + 1, type(exc).__name__, exc
        )
        if failures > self.fail_count or last:
            exc.add_note(f"{type(self).__name__}: {failures} of {index + 1} attempts failed")
            raise exc

    def rollout(self, index: int) -> Module:
        """A copy of the module whose predictors send rollout id ``start + index``, temperature non-zero."""
        copy = self.module.deepcopy()
        default_lm = current_settings().lm
        for _, predictor in copy.named_predictors():
            lm = predictor.lm or default_lm
            configured = predictor.config.get("temperature", lm.temperature if lm else 0.0)
            temperature = self.temperature or configured or DEFAULT_ROLLOUT_TEMPERATURE
            start = predictor.config.get("rollout_id") or 0
            predictor.config = {**predictor.config, "rollout_id": start + index, "temperature": temperature}
        return copy

    def prepare(self, rollout: Module, advice: Any) -> None:
        """Adjust a rollout before it runs (Refine adds its hints here); nothing in BestOfN."""

    async def feedback(self, inputs: dict[str, Any], attempt: Attempt) -> Any:
        """What the next attempt should know about this one (Refine asks the LM); nothing in BestOfN."""
        return None

    def _keep_trace(self, attempt: Attempt) -> None:
        # The attempt ran on a copy, in a trace of its own: record its steps against this module's own
        # predictors, so the caller's trace names them by their paths in the program.
        originals = dict(self.module.named_predictors())
        for step in attempt.prediction.trace:
            record_trace_step(originals.get(step.predictor_path, step.predictor), step.inputs, step.outputs)
        outer = current_settings().trace
        if outer is not None and attempt.settings_trace:
            by_copy = {
                id(copy): originals.get(path, copy) for path, copy in attempt.rollout.named_predictors()
            }
            outer.extend((by_copy.get(id(p), p), i, o) for p, i, o in attempt.settings_trace)

    # -- saving -------------------------------------------------------------------------------

    def program_state(self) -> dict[str, Any]:
        """N, threshold, fail_count, temperature and ``reward_fn`` by import path."""
        return {
            "N": self.N,
            "threshold": self.threshold,
            "fail_count": self.fail_count,
            "temperature": self.temperature,
            "reward_fn": import_path_of(self.reward_fn, what=f"{type(self).__name__} reward_fn"),
        }

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Built from the saved state; the loader then builds the ``module`` child and sets it."""
        state, children = node.get("state"), node.get("children")
        if not isinstance(state, Mapping) or not isinstance(children, Mapping) or "module" not in children:
            raise ProgramLoadError(f"a saved {cls.__name__} needs its 'state' and its 'module' child")
        reward_fn = import_object(state["reward_fn"], allow_modules=allow_modules, what="reward_fn")
        instance = cls.__new__(cls)
        instance._configure(
            state["N"], reward_fn, state["threshold"], state["fail_count"], state["temperature"]
        )
        instance._after_load()
        return instance

    def _after_load(self) -> None:
        """Set up what subclasses keep besides the saved state (nothing for BestOfN)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.module!r}, N={self.N}, threshold={self.threshold})"

"""A fake executor for optimizer unit tests: no LM, no HTTP; it answers from the examples' labels.

A run "passes" when ``passes(example, rollout_id)`` says so; every run and every evaluated example
counts one LM call into the usage trackers open in the caller's context (what a local executor's
LM calls would do), so budgets see it. Candidates score by how many demos they carry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dspex.evaluate import EvaluationResult, ExampleResult
from dspex.lm import LM
from dspex.lm.usage import Usage, record_usage
from dspex.metrics import resolve_metric, score_of
from dspex.optimizers.executor import per_example
from dspex.primitives import Example, Module, Prediction, TraceStep
from dspex.testing import SimulatedLMServer

Passes = Callable[[Example, int | None], bool]


class FakeExecutor:
    def __init__(self, passes: Passes | None = None, *, usage_per_call: Usage | None = None) -> None:
        self.passes = passes or (lambda example, rollout: True)
        self.usage_per_call = usage_per_call or Usage(lm_calls=1, prompt_tokens=10)
        self.runs: list[tuple[int | None, list[str]]] = []  # (rollout_id, questions) per run call
        self.evaluations: list[int] = []  # candidates per evaluate_many call

    @property
    def calls(self) -> int:
        return sum(len(questions) for _, questions in self.runs)

    async def run(
        self, program: Any, examples: Sequence[Example], *, rollout_id: int | None = None, lm: Any = None
    ) -> list[Prediction | Exception]:
        programs = per_example(program, len(examples))
        self.runs.append((rollout_id, [ex.question for ex in examples]))
        return [self._predict(p, ex, rollout_id) for p, ex in zip(programs, examples, strict=True)]

    def _predict(self, program: Module, example: Example, rollout_id: int | None) -> Prediction:
        record_usage(self.usage_per_call)
        answer = example.answer if self.passes(example, rollout_id) else "wrong"
        prediction = Prediction(answer=answer)
        inputs = dict(example.inputs().items())
        prediction._trace = [
            TraceStep(path, predictor, inputs, {"answer": answer})
            for path, predictor in program.named_predictors()
        ]
        return prediction

    async def evaluate_many(
        self,
        candidates: Sequence[Module],
        examples: Sequence[Example],
        metric: Any,
        *,
        failure_score: float = 0.0,
        max_errors: int | None = None,
    ) -> list[EvaluationResult]:
        self.evaluations.append(len(candidates))
        return [self._evaluate(c, examples, resolve_metric(metric), failure_score) for c in candidates]

    def _evaluate(
        self, candidate: Module, examples: Sequence[Example], metric: Any, failure_score: float
    ) -> EvaluationResult:
        demos = sum(len(p.demos) for p in candidate.predictors())
        records = []
        for index, example in enumerate(examples):
            record_usage(self.usage_per_call)
            right = index < demos * len(examples) // 8  # more demos, more right answers
            prediction = Prediction(answer=example.answer if right else "wrong")
            try:
                score, error = score_of(metric(example, prediction))[0], None
            except Exception as exc:
                score, error = failure_score, f"{type(exc).__name__}: {exc}"
            records.append(ExampleResult(index, example, prediction, score, error=error))
        usage = Usage(lm_calls=len(examples))
        return EvaluationResult.from_records(records, usage=usage, total=len(examples), metric="m")


def dataset(n: int, offset: int = 0) -> list[Example]:
    return [
        Example(question=f"What is {i} + 1?", answer=str(i + 1)).with_inputs("question")
        for i in range(offset, offset + n)
    ]


def sim_lm_of(sim: SimulatedLMServer) -> LM:
    """An LM on the simulated LM (the ``sim`` fixture of conftest.py), its cache off."""
    return LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False)

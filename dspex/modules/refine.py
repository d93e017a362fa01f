"""``Refine``: :class:`BestOfN` plus LM-written advice between attempts.

    refine = Refine(ChainOfThought("question -> answer"), N=3, reward_fn=one_word, threshold=1.0)
    pred = await refine.acall(question="What is the capital of Belgium?")

After an attempt that misses the threshold (and before the last one), an LM reads the program's code,
its predictors, the attempt's inputs, trace and outputs and the reward function's code, and writes
``advice``: one hint per predictor path. The next attempt gets its predictor's hint as an extra input
field, ``hint_`` ("A hint to the module from an earlier run"), as DSPy 3.4.1's Refine does. Hints are
added to the request only: the module, its signatures and the returned trace stay as they were.
The advice is asked of the LM the module's first predictor uses (else the configured default).
"""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic_core import to_jsonable_python

from dspex.adapters import Adapter, ChatAdapter
from dspex.adapters.types import AdapterResult
from dspex.configuration import current_settings
from dspex.modules.best_of_n import Attempt, BestOfN, RewardFn
from dspex.modules.predict import Predict
from dspex.primitives import Module, detached_trace
from dspex.signatures import InputField, OutputField, Signature

if TYPE_CHECKING:
    from dspex.lm import BaseLM

__all__ = ["HINT_FIELD", "OfferFeedback", "Refine"]

HINT_FIELD = "hint_"
_HINT_DESC = "A hint to the module from an earlier run"
_NO_ADVICE = "N/A"


class OfferFeedback(Signature):
    """A program ran and its output scored below the target reward. Go through the trajectory and say which
    modules, if any, are responsible for the shortfall. For each module, write advice it can act on when it
    next sees the same or similar inputs: it will not see this run, so the advice must be concrete and
    self-contained. A module that is not to blame gets N/A."""

    program_code: str = InputField(desc="The source code of the program")
    modules_defn: str = InputField(
        desc="Each module of the program with its inputs, outputs and instructions"
    )
    program_inputs: str = InputField(desc="The inputs the program was called with")
    program_trajectory: str = InputField(desc="Each module call of the run, with its inputs and outputs")
    program_outputs: str = InputField(desc="The outputs of the program")
    reward_code: str = InputField(desc="The source code of the reward function")
    target_threshold: float = InputField(desc="The reward the outputs should reach")
    reward_value: float = InputField(desc="The reward the outputs got")
    module_names: list[str] = InputField(desc="The modules to advise, by name")
    discussion: str = OutputField(desc="Which modules went wrong, if any, and how")
    advice: dict[str, str] = OutputField(
        desc="For each module: the situations in which it went wrong and what each mistake was, then what "
        "it should do differently in such situations from now on; N/A if it is not to blame"
    )


class Refine(BestOfN):
    """Like :class:`BestOfN` (same arguments and rollouts), with advice from the LM between attempts."""

    program_alias: ClassVar[str | None] = "dspex.Refine"

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
        super().__init__(module, N, reward_fn, threshold, fail_count, temperature=temperature)
        self._after_load()

    def _after_load(self) -> None:
        self._sources: dict[str, str] = {}  # the code texts shown to the advisor, read once

    def prepare(self, rollout: Module, advice: Any) -> None:
        """Give each predictor of the rollout its hint (``N/A`` when the advice names it not)."""
        if not isinstance(advice, Mapping):
            return
        default = current_settings().adapter or ChatAdapter()
        for path, predictor in rollout.named_predictors():
            hint = str(advice.get(path, _NO_ADVICE))
            predictor.adapter = HintAdapter(predictor.adapter or default, hint)

    async def feedback(self, inputs: dict[str, Any], attempt: Attempt) -> Any:
        """Ask the LM for advice on ``attempt``: a dict of hints by predictor path."""
        rollout = attempt.rollout
        trajectory = [
            {"module_name": step.predictor_path, "inputs": step.inputs, "outputs": step.outputs}
            for step in attempt.prediction.trace
        ]
        advisor_inputs = {
            "program_code": self._source("program", type(self.module)),
            "modules_defn": describe_predictors(rollout),
            "program_inputs": _json(inputs),
            "program_trajectory": _json(trajectory),
            "program_outputs": _json(dict(attempt.prediction.items())),
            "reward_code": self._source("reward", self.reward_fn),
            "target_threshold": self.threshold,
            "reward_value": attempt.reward,
            "module_names": [path for path, _ in rollout.named_predictors()],
        }
        advisor = Predict(OfferFeedback, lm=self._advisor_lm())
        with detached_trace():  # the advisor is not part of the program: keep it out of the trace
            advice = await advisor.acall(**advisor_inputs)
        return advice.advice

    def _advisor_lm(self) -> BaseLM | None:
        lms = [predictor.lm for predictor in self.module.predictors() if predictor.lm is not None]
        return lms[0] if lms else None  # None: the advisor uses dspex.context / configure's LM

    def _source(self, key: str, obj: Any) -> str:
        if key not in self._sources:
            target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
            try:
                self._sources[key] = inspect.getsource(target)
            except (OSError, TypeError):  # built in a notebook or REPL: no file to read
                self._sources[key] = f"<source of {getattr(target, '__qualname__', target)!r} unavailable>"
        return self._sources[key]


class HintAdapter(Adapter):
    """Wraps a predictor's adapter to add the ``hint_`` input field and value to its requests."""

    def __init__(self, inner: Adapter, hint: str) -> None:
        self.inner = inner
        self.hint = hint
        self.name = inner.name  # type: ignore[misc]  # reports the wrapped adapter's name

    async def acall_result(
        self,
        lm: BaseLM,
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> AdapterResult:
        """The inner adapter's call with the hint appended to the signature and the inputs."""
        hinted = signature.append(HINT_FIELD, InputField(desc=_HINT_DESC), str)
        hinted_inputs = {**inputs, HINT_FIELD: self.hint}
        return await self.inner.acall_result(lm, hinted, demos, hinted_inputs, config=config)


def describe_predictors(program: Module) -> str:
    """Each predictor's path, input and output fields and instructions, as the advisor reads them."""
    separator = "-" * 80
    parts = [separator]
    for path, predictor in program.named_predictors():
        signature = predictor.signature
        parts += [
            f"Module {path}",
            "\tInput Fields:" + _field_lines(signature.input_fields.values()),
            "\tOutput Fields:" + _field_lines(signature.output_fields.values()),
            "\tOriginal Instructions: " + _indented(textwrap.dedent(signature.instructions)),
            separator,
        ]
    return "\n".join(parts)


def _field_lines(specs: Any) -> str:
    lines = [
        f"{n}. `{s.name}` ({getattr(s.annotation, '__name__', s.annotation)}): {s.desc}"
        for n, s in enumerate(specs, 1)
    ]
    return _indented("\n".join(lines))


def _indented(text: str) -> str:
    return "".join(f"\n\t\t{line}" for line in text.splitlines())


def _json(value: Any) -> str:
    return json.dumps(to_jsonable_python(value, fallback=repr), indent=2, ensure_ascii=False)

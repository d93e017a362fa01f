"""``InferRules``: BootstrapFewShot, then rules induced from the trainset added to each predictor's
instructions; the best of ``num_candidates`` such programs on the valset wins.

    optimizer = InferRules(metric=metric, num_candidates=5, num_rules=8)
    best = optimizer.compile(program, trainset=train, valset=val)

As DSPy's: without a valset the trainset's first half trains and its second half validates;
``BootstrapFewShot`` (every keyword it takes is accepted) gives the demos; for each candidate, each
predictor's rules come from one LM call over the trainset's examples written out as its input and
output fields (a fresh rollout at temperature 1.0 under ``teacher_settings``, so candidates differ),
dropping examples from the end while the call fails on a prompt too long (an
:class:`~dspex.errors.AdapterParseError`, a ``ValueError`` or a context-window error), until even
one example does not fit (a RuntimeError). Each candidate is scored with ``Evaluate`` and the best
is returned. What differs: the wording of the rule-induction request and of the instructions'
rules section is dspex's own, and the instructions are changed on each candidate's own signature
(DSPy writes them onto the signature class the candidates share).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from dspex._sync import run_sync
from dspex.configuration import context, current_settings
from dspex.errors import AdapterParseError, ConfigurationError, ContextWindowExceededError, LMRequestError
from dspex.evaluate import Evaluate
from dspex.modules import ChainOfThought
from dspex.optimizers._base import Teleprompter
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.primitives import Example, Module
from dspex.signatures import InputField, OutputField, Signature

__all__ = ["InferRules", "RulesInductionProgram"]

logger = logging.getLogger(__name__)

RULES_HEADING = "Follow these rules when you answer:"


class InferRules(BootstrapFewShot):
    """DSPy's ``InferRules(num_candidates=10, num_rules=10, num_threads=None,
    teacher_settings=None, **bootstrap_kwargs)`` (module docs)."""

    acompile = Teleprompter.acompile  # the compile below, in a thread (not BootstrapFewShot's run)

    def __init__(
        self,
        num_candidates: int = 10,
        num_rules: int = 10,
        num_threads: int | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(teacher_settings=teacher_settings, **kwargs)
        self.num_candidates = num_candidates
        self.num_rules = num_rules
        self.num_threads = num_threads
        self.rules_induction_program = RulesInductionProgram(num_rules, teacher_settings=teacher_settings)

    def compile(  # type: ignore[override]  # DSPy's signature
        self,
        student: Module,
        *,
        teacher: Module | None = None,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None = None,
    ) -> Module:
        """The best of ``num_candidates`` bootstrapped programs with induced rules, on the valset."""
        train = list(trainset)
        if valset is None:
            half = len(train) // 2
            train, validation = train[:half], train[half:]
        else:
            validation = list(valset)
        # BootstrapFewShot's own run (its acompile: this class's compile and acompile are InferRules')
        bootstrapped = run_sync(BootstrapFewShot.acompile(self, student, teacher=teacher, trainset=train))
        best_score, best_program = -math.inf, bootstrapped
        for candidate_index in range(self.num_candidates):
            candidate = bootstrapped.deepcopy()
            for predictor in candidate.predictors():
                rules = self.induce_natural_language_rules(predictor, train)
                self.update_program_instructions(predictor, rules)
            score = self.evaluate_program(candidate, validation)
            if score > best_score:
                best_score, best_program = score, candidate
            logger.info(
                "InferRules: candidate %d/%d scored %s (best %s)",
                candidate_index + 1, self.num_candidates, score, best_score,
            )  # fmt: skip
        return best_program

    def induce_natural_language_rules(self, predictor: Any, trainset: Sequence[Example]) -> str:
        """Rules for ``predictor`` from the trainset's examples, with fewer examples while they
        do not fit in the model's context."""
        demos = self.get_predictor_demos(trainset, predictor)
        while True:
            try:
                return str(self.rules_induction_program(self.format_examples(demos, predictor.signature)))
            except (AdapterParseError, ValueError, LMRequestError, ContextWindowExceededError) as exc:
                if isinstance(exc, ConfigurationError):
                    raise  # no LM, a bad setting: fewer examples will not help
                if len(demos) <= 1:
                    raise RuntimeError(
                        "InferRules could not induce rules: not even one example fits in the model's context"
                    ) from exc
                demos = demos[:-1]

    def update_program_instructions(self, predictor: Any, natural_language_rules: str) -> None:
        """Append the rules to ``predictor``'s instructions (on its own signature)."""
        instructions = f"{predictor.signature.instructions}\n\n{RULES_HEADING}\n{natural_language_rules}"
        predictor.signature = predictor.signature.with_instructions(instructions)

    def format_examples(self, demos: Sequence[Mapping[str, Any]], signature: Any) -> str:
        """The examples as text: each one's input fields, a separator, then its output fields."""
        blocks = []
        for demo in demos:
            inputs = "\n".join(
                f"{key}: {value}" for key, value in demo.items() if key in signature.input_fields
            )
            outputs = "\n".join(
                f"{key}: {value}" for key, value in demo.items() if key in signature.output_fields
            )
            blocks.append(f"Input Fields:\n{inputs}\n\n=========\nOutput Fields:\n{outputs}\n\n")
        return "".join(blocks)

    def get_predictor_demos(self, trainset: Sequence[Example], predictor: Any) -> list[dict[str, Any]]:
        """Each training example reduced to ``predictor``'s input and output fields."""
        fields = {*predictor.signature.input_fields, *predictor.signature.output_fields}
        return [{key: value for key, value in example.items() if key in fields} for example in trainset]

    def evaluate_program(self, program: Module, dataset: Sequence[Example]) -> float:
        max_errors = self.max_errors if self.max_errors is not None else current_settings().max_errors
        evaluate = Evaluate(
            devset=list(dataset),
            metric=self.metric,
            num_threads=self.num_threads,
            max_errors=max_errors,
            display_progress=True,
        )
        return float(evaluate(program, metric=self.metric).score)


class _InduceRules(Signature):
    """Read the examples of a task and write down, as a numbered list, the rules that someone doing
    this task should follow: each rule short, actionable, and not repeating another."""

    examples_text: str = InputField(desc="examples of the task, each with its input and output fields")
    natural_language_rules: str = OutputField(desc="the rules, one per line")


class RulesInductionProgram(Module):
    """One rule-induction call: ``num_rules`` rules from examples' text, sampled afresh each time."""

    def __init__(self, num_rules: int, teacher_settings: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        instructions = f"{_InduceRules.instructions} Write {num_rules} rules."
        self.rules_induction = ChainOfThought(_InduceRules.with_instructions(instructions))
        self.teacher_settings = dict(teacher_settings or {})
        self.rng = random.Random(0)

    def forward(self, examples_text: str) -> str:  # type: ignore[override]  # DSPy's: the rules' text
        sampling = {"rollout_id": self.rng.randint(0, 10**9), "temperature": 1.0}  # a fresh draw each time
        with context(**self.teacher_settings):
            found = self.rules_induction(examples_text=examples_text, config=sampling)
        return str(found.natural_language_rules).strip()

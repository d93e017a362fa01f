"""MIPROv2's grounded proposer: instructions written from the data, the program and worked examples.

    proposer = GroundedProposer(program, trainset, lm=prompt_model, temperature=1.0, ...)
    observed = await proposer.observe(seed)             # these two rounds need no demos: they run
    grounding = await proposer.ground(observed, seed)   # while the demo sets are bootstrapped
    found = await proposer.propose(requests, grounding, demo_sets)  # every instruction at once

What grounds a proposal (each part can be switched off, as DSPy's ``*_aware_proposer`` knobs do):

- a *dataset summary*: observations on batches of ``view_data_batch_size`` training examples (at
  most ten batches), then one summary of them;
- a *program description* from the program's structure, and a *module description* per predictor;
- *task demos*: up to three bootstrapped (augmented) demos from the candidate's demo set and the
  sets after it;
- a *tip* drawn at random (be creative, be concise, give a persona...).

What differs from DSPy: DSPy writes the dataset observations one batch after another (each seeing
the earlier ones) and describes the program again for every proposal, from bootstrapped demos. Here
the batches are described at once and summarised together, the program and each module are
described once from labeled training examples (two rounds, which need no demos and so run while
the demos are bootstrapped), and then every instruction proposal of every predictor is asked at
once. Every request goes through :func:`~dspex.optimizers.proposal.propose_text` (one retry on
unusable output); a skipped summary or description leaves that part out, a skipped instruction is
reported to the caller, which records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict

from dspex.lm import LM
from dspex.modules import Predict
from dspex.optimizers.proposal import Proposal, propose_text
from dspex.primitives import Example, Module
from dspex.primitives.module import Predictor
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "TIPS",
    "GroundedProposer",
    "Grounding",
    "InstructionRequest",
    "ProposerSwitches",
    "draw_tip",
    "program_code",
]

# Prompting tips, one drawn per proposal ("none": no tip).
TIPS: dict[str, str] = {
    "none": "",
    "creative": "Feel free to be inventive in how the new instruction is written.",
    "simple": "Make the instruction short and easy to follow.",
    "description": "Make the instruction detailed and thorough.",
    "high_stakes": "Frame the task as one with high stakes that the model must get right.",
    "persona": 'Give the model a persona suited to the task (for example "You are a ...").',
}
NO_DEMOS = "No task demos provided."
# DSPy's caps: ten batches of examples for the dataset summary, three demos shown per proposal.
MAX_SUMMARY_BATCHES = 10
DEMOS_IN_CONTEXT = 3


class DescribeData(Signature):
    """Here are some examples from a dataset. Write down observations about patterns that hold for
    most or all of them (topic, content, form, length...) and make an educated guess at the task the
    dataset is meant for."""

    examples: str = InputField(desc="examples from the dataset")
    observations: str = OutputField(desc="patterns that hold for most or all of the examples")


class SummarizeObservations(Signature):
    """Summarise these observations about a dataset in two or three sentences, keeping only what
    matters most."""

    observations: str = InputField(desc="observations about a dataset")
    summary: str = OutputField(desc="a two or three sentence summary of the key observations")


class DescribeProgram(Signature):
    """Here is an outline of a program that solves a task with calls to language models. Describe
    the task it appears to solve and how it goes about it."""

    program_code: str = InputField(desc="outline of the language model program")
    program_example: str = InputField(desc="examples of the program's inputs and outputs")
    program_description: str = OutputField(desc="the task the program solves, and how it does it")


class DescribeModule(Signature):
    """Here is an outline of a program that solves a task with calls to language models. Describe
    the role of the named module within it."""

    program_code: str = InputField(desc="outline of the language model program")
    program_example: str = InputField(desc="examples of the program's inputs and outputs")
    program_description: str = InputField(desc="the task the program solves, and how it does it")
    module: str = InputField(desc="the module to describe")
    module_description: str = OutputField(desc="the module's role in the program")


class ProposeInstruction(Signature):
    """Learn about a task that a language model is used for from the information below, then write
    a new instruction that would prompt the language model to do the task better."""

    dataset_description: str = InputField(desc="a description of the dataset")
    program_code: str = InputField(desc="outline of the language model program")
    program_description: str = InputField(desc="the task the program solves, and how it does it")
    module: str = InputField(desc="the module the instruction is for")
    module_description: str = InputField(desc="the module's role in the program")
    task_demos: str = InputField(desc="example inputs and outputs of the module")
    basic_instruction: str = InputField(desc="the module's current instruction")
    tip: str = InputField(desc="a suggestion for how to write the new instruction")
    proposed_instruction: str = OutputField(desc="the new instruction for the language model")


@dataclass(frozen=True)
class ProposerSwitches:
    """DSPy's ``program_aware_proposer``, ``data_aware_proposer``, ``tip_aware_proposer`` and
    ``fewshot_aware_proposer``."""

    program_aware: bool = True
    data_aware: bool = True
    tip_aware: bool = True
    fewshot_aware: bool = True


@dataclass(frozen=True)
class InstructionRequest:
    """One instruction to propose: for predictor ``predictor``, grounded in demo set ``demo_set``."""

    predictor: int
    candidate: int
    demo_set: int
    tip: str
    rollout_id: int


def program_code(program: Module) -> str:
    """An outline of the program: its class's source when it is a custom module, then each predictor."""
    lines: list[str] = []
    if type(program).__module__.split(".")[0] != "dspex":
        # a class defined where no source is kept (a REPL) raises: the outline below suffices
        with contextlib.suppress(OSError, TypeError):
            lines.append(inspect.getsource(type(program)))
    for path, predictor in program.named_predictors():
        signature = predictor.signature
        lines.append(f"{path} = {type(predictor).__name__}({signature.signature_string!r})")
        lines.append(f"    # instructions: {signature.instructions}")
    return "\n".join(lines)


def module_outline(predictor: Predictor) -> str:
    signature = predictor.signature
    inputs, outputs = ", ".join(signature.input_fields), ", ".join(signature.output_fields)
    return f"{type(predictor).__name__}({inputs}) -> {outputs}"


def _example_text(example: Example, predictor: Predictor) -> str:
    fields = predictor.signature.fields.values()
    return "\n".join(f"{spec.prefix} {example.get(spec.name)}" for spec in fields if spec.name in example)


def task_demos(demo_sets: Sequence[Sequence[Example]], demo_set: int, predictor: Predictor) -> str:
    """Up to three bootstrapped demos from set ``demo_set`` and the sets after it (wrapping around).

    Demo set 0 is the zero-shot program's (no demos), so a proposal for it sees none, as in DSPy.
    """
    if demo_set == 0 or not demo_sets:
        return NO_DEMOS
    order = [*demo_sets[demo_set:], *demo_sets[:demo_set]]
    found = [demo for demos in order for demo in demos if demo.get("augmented")]
    texts = [_example_text(demo, predictor) for demo in found[:DEMOS_IN_CONTEXT]]
    return "\n\n".join(texts) if texts else NO_DEMOS


def _examples_text(examples: Sequence[Example]) -> str:
    return "\n".join(json.dumps(example.to_dict(), default=str, sort_keys=True) for example in examples)


@dataclass(frozen=True)
class Grounding:
    """What every proposal is grounded in (None: switched off, or its request was skipped)."""

    # validated as part of a checkpoint (dspex.optimizers.checkpoint.MiproState)
    __pydantic_config__ = ConfigDict(extra="forbid")

    dataset_summary: str | None = None
    program_description: str | None = None
    module_descriptions: tuple[str | None, ...] = ()


class GroundedProposer:
    """Writes instruction proposals for one program. ``lm``: the prompt model (None: the context's LM).

    :meth:`observe` and then :meth:`ground` (a round of requests each) need only the program and
    the trainset, so they can run while demos are still being bootstrapped; :meth:`propose` then
    needs the demo sets. ``seed`` makes each grounding request distinct.
    """

    def __init__(
        self,
        program: Module,
        trainset: Sequence[Example],
        *,
        lm: LM | None,
        temperature: float,
        view_data_batch_size: int,
        switches: ProposerSwitches,
    ) -> None:
        self.program, self.trainset = program, list(trainset)
        self.lm, self.temperature = lm, temperature
        self.batch_size, self.switches = view_data_batch_size, switches
        self.predictors = program.predictors()

    async def observe(self, seed: int) -> Grounding:
        """First round: observations on the data (kept in ``dataset_summary`` until :meth:`ground`
        summarises them) and the program description."""
        observations, program_text = await asyncio.gather(
            self._observations(seed), self._describe_program(seed)
        )
        return Grounding(observations, program_text)

    async def ground(self, observed: Grounding, seed: int) -> Grounding:
        """Second round: the summary of the observations and each module's description."""
        program_text = observed.program_description
        summary, *modules = await asyncio.gather(
            self._summary(observed.dataset_summary, seed),
            *(self._describe_module(index, program_text, seed) for index in range(len(self.predictors))),
        )
        return Grounding(summary, program_text, tuple(modules))

    async def propose(
        self,
        requests: Sequence[InstructionRequest],
        grounding: Grounding,
        demo_sets: Mapping[int, Sequence[Sequence[Example]]],
    ) -> list[Proposal]:
        """One proposal per request, all at once, in request order. ``demo_sets[p][s]``: predictor
        ``p``'s demos in demo set ``s``."""
        return list(
            await asyncio.gather(*(self._instruction(request, grounding, demo_sets) for request in requests))
        )

    async def _ask(self, module: Predict, inputs: Mapping[str, Any], field: str, rollout_id: int) -> Proposal:
        return await propose_text(module, inputs, field=field, rollout_id=rollout_id, lm=self.lm)

    async def _observations(self, seed: int) -> str | None:
        if not self.switches.data_aware:
            return None
        size = self.batch_size
        starts = range(0, len(self.trainset), size)[:MAX_SUMMARY_BATCHES]
        describe = Predict(DescribeData)
        seen = await asyncio.gather(
            *(
                self._ask(
                    describe,
                    {"examples": _examples_text(self.trainset[s : s + size])},
                    "observations",
                    seed + i,
                )
                for i, s in enumerate(starts)
            )
        )
        return "\n".join(found.text for found in seen if found.text) or None

    async def _summary(self, observations: str | None, seed: int) -> str | None:
        if observations is None:
            return None
        summarize = Predict(SummarizeObservations)
        summary = await self._ask(
            summarize, {"observations": observations}, "summary", seed + MAX_SUMMARY_BATCHES
        )
        return summary.text

    def _program_example(self) -> str:
        # DSPy shows bootstrapped demos here; labeled training examples tell the same story and are
        # there before any bootstrap, so the descriptions can be written while demos are bootstrapped.
        return _examples_text(self.trainset[:DEMOS_IN_CONTEXT])

    async def _describe_program(self, seed: int) -> str | None:
        if not self.switches.program_aware:
            return None
        inputs = {"program_code": program_code(self.program), "program_example": self._program_example()}
        found = await self._ask(Predict(DescribeProgram), inputs, "program_description", seed + 100)
        return found.text

    async def _describe_module(self, index: int, program_text: str | None, seed: int) -> str | None:
        if program_text is None:
            return None
        inputs = {
            "program_code": program_code(self.program),
            "program_example": self._program_example(),
            "program_description": program_text,
            "module": module_outline(self.predictors[index]),
        }
        found = await self._ask(Predict(DescribeModule), inputs, "module_description", seed + 200 + index)
        return found.text

    async def _instruction(
        self,
        request: InstructionRequest,
        grounding: Grounding,
        demo_sets: Mapping[int, Sequence[Sequence[Example]]],
    ) -> Proposal:
        predictor = self.predictors[request.predictor]
        described = grounding.program_description is not None
        demos = NO_DEMOS
        if self.switches.fewshot_aware:
            demos = task_demos(demo_sets.get(request.predictor, []), request.demo_set, predictor)
        inputs: dict[str, Any] = {
            "dataset_description": grounding.dataset_summary,
            "program_code": program_code(self.program) if described else None,
            "program_description": grounding.program_description,
            "module": module_outline(predictor) if described else None,
            "module_description": grounding.module_descriptions[request.predictor] if described else None,
            "task_demos": demos,
            "basic_instruction": predictor.signature.instructions,
            "tip": request.tip or None,
        }
        signature: type[Signature] = ProposeInstruction
        for name in [name for name, value in inputs.items() if value is None]:
            signature = signature.delete(name)  # a part switched off or skipped is not asked about
            del inputs[name]
        return await propose_text(
            Predict(signature),
            inputs,
            field="proposed_instruction",
            rollout_id=request.rollout_id,
            lm=self.lm,
            temperature=self.temperature,
        )


def draw_tip(rng: Any, tip_aware: bool) -> str:
    """A random tip's text ('' for none) when proposals are tip-aware; '' otherwise (no draw)."""
    if not tip_aware:
        return ""
    return TIPS[rng.choice(list(TIPS))]

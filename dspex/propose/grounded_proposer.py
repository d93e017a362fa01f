"""DSPy's ``GroundedProposer`` interface, answered by MIPROv2's proposer (:mod:`dspex.optimizers.grounded`).

    proposer = GroundedProposer(prompt_model=lm, program=program, trainset=trainset)
    proposals = proposer.propose_instructions_for_program(trainset, program, demo_candidates, {}, N=3)
    # {0: ["instruction", ...], 1: [...]}: N (at most) per predictor, by predictor index

The constructor grounds the proposals as DSPy's does: a summary of the training data and a
description of the program (each switchable, each left out when its LM requests give nothing
usable). Each proposal runs on ``prompt_model.copy(temperature=init_temperature)`` with its own
rollout id, so repeated proposals are distinct requests rather than cache hits.

What differs from DSPy: :meth:`propose_instructions_for_program` sends every proposal at once
instead of one after another, and no instruction history is shown to the proposer (``trial_logs``,
``use_instruct_history`` and ``set_history_randomly`` are accepted and unused; dspex's MIPROv2 does
not show one either). Tips are dspex's (:data:`dspex.optimizers.grounded.TIPS`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from dspex._sync import run_sync
from dspex.configuration import settings
from dspex.errors import ConfigurationError
from dspex.lm.base import BaseLM
from dspex.optimizers.grounded import TIPS, Grounding, InstructionRequest, ProposerSwitches
from dspex.optimizers.grounded import GroundedProposer as _Proposer
from dspex.primitives import Example, Module

__all__ = ["GroundedProposer"]

logger = logging.getLogger(__name__)

_MAX_ROLLOUT = 10**9


class GroundedProposer:
    """Writes new instructions for a program's predictors, grounded in its data, code and demos."""

    def __init__(
        self,
        prompt_model: BaseLM | None,
        program: Module,
        trainset: Sequence[Example],
        view_data_batch_size: int = 10,
        use_dataset_summary: bool = True,
        program_aware: bool = True,
        use_task_demos: bool = True,
        num_demos_in_context: int = 3,
        use_instruct_history: bool = True,
        use_tip: bool = True,
        set_tip_randomly: bool = True,
        set_history_randomly: bool = True,
        verbose: bool = False,
        rng: random.Random | None = None,
        init_temperature: float = 1.0,
    ) -> None:
        self.prompt_model = prompt_model
        self.program = program
        self.trainset = list(trainset)
        self.view_data_batch_size = view_data_batch_size
        self.use_dataset_summary = use_dataset_summary
        self.program_aware = program_aware
        self.use_task_demos = use_task_demos
        self.num_demos_in_context = num_demos_in_context
        self.use_instruct_history = use_instruct_history
        self.use_tip = use_tip
        self.set_tip_randomly = set_tip_randomly
        self.set_history_randomly = set_history_randomly
        self.verbose = verbose
        self.rng = rng or random.Random()
        self.init_temperature = init_temperature
        self.grounding = run_sync(self._ground())

    @property
    def data_summary(self) -> str | None:
        """The training data's summary the proposals see (None: off, or nothing usable came back)."""
        return self.grounding.dataset_summary

    def propose_instructions_for_program(
        self,
        trainset: Sequence[Example],
        program: Module,
        demo_candidates: Sequence[Sequence[Sequence[Example]]] | None,
        trial_logs: Mapping[Any, Any] | None,
        N: int,  # DSPy's name
    ) -> dict[int, list[str]]:
        """Up to ``N`` instructions per predictor (one per demo set while there are demo sets), by
        predictor index; all requested at once. ``trial_logs`` is unused (see the module doc)."""
        sets = max(len(demo_candidates[0]), 1) if demo_candidates else N
        requests = [
            InstructionRequest(
                predictor=index,
                candidate=demo_set,
                demo_set=demo_set,
                tip=self._tip(),
                rollout_id=self._rollout(),
            )
            for index in range(len(program.predictors()))
            for demo_set in range(min(N, sets))
        ]
        texts = self._propose(program, requests, demo_candidates)
        found: dict[int, list[str]] = {}
        for request, text in zip(requests, texts, strict=True):
            found.setdefault(request.predictor, []).append(text)
        return found

    def propose_instruction_for_predictor(
        self,
        program: Module,
        predictor: Any,
        pred_i: int,
        demo_candidates: Sequence[Sequence[Sequence[Example]]] | None,
        demo_set_i: int,
        trial_logs: Mapping[Any, Any] | None,
        tip: str | None = None,
    ) -> str:
        """One new instruction for predictor ``pred_i`` of ``program``, grounded in demo set
        ``demo_set_i``; ``tip`` (a text) is shown when given. ``predictor`` and ``trial_logs`` are
        unused (the index names the predictor)."""
        request = InstructionRequest(
            predictor=pred_i,
            candidate=demo_set_i,
            demo_set=demo_set_i,
            tip=tip or "",
            rollout_id=self._rollout(),
        )
        return self._propose(program, [request], demo_candidates)[0]

    # -- internals -----------------------------------------------------------------------------

    def _lm(self) -> BaseLM:
        lm = self.prompt_model if self.prompt_model is not None else settings.lm
        if lm is None:
            raise ConfigurationError("GroundedProposer needs prompt_model=... or dspex.configure(lm=...)")
        return lm

    def _inner(self, program: Module, lm: BaseLM, fewshot: bool) -> _Proposer:
        switches = ProposerSwitches(
            program_aware=self.program_aware,
            data_aware=self.use_dataset_summary and bool(self.trainset),
            tip_aware=self.use_tip,
            fewshot_aware=fewshot,
        )
        return _Proposer(
            program,
            self.trainset,
            lm=lm,  # type: ignore[arg-type]  # any BaseLM answers the proposer's Predict calls
            temperature=self.init_temperature,
            view_data_batch_size=self.view_data_batch_size,
            switches=switches,
        )

    async def _ground(self) -> Grounding:
        inner = self._inner(self.program, self._lm(), fewshot=self.use_task_demos)
        seed = self._rollout()
        grounding = await inner.ground(await inner.observe(seed), seed)
        if self.verbose:
            logger.info(
                "data summary: %s; program: %s", grounding.dataset_summary, grounding.program_description
            )
        return grounding

    def _propose(
        self,
        program: Module,
        requests: list[InstructionRequest],
        demo_candidates: Sequence[Sequence[Sequence[Example]]] | None,
    ) -> list[str]:
        # Each proposal batch runs on a copy at init_temperature (DSPy's rollout LM).
        lm = self._lm().copy(temperature=self.init_temperature)
        inner = self._inner(program, lm, fewshot=self.use_task_demos and bool(demo_candidates))
        demo_sets = {
            index: [list(demos) for demos in sets] for index, sets in enumerate(demo_candidates or [])
        }
        proposals = run_sync(inner.propose(requests, self._grounding_for(program), demo_sets))
        predictors = program.predictors()
        texts: list[str] = []
        for request, proposal in zip(requests, proposals, strict=True):
            if proposal.text is None:  # nothing usable after the retries: keep the current one
                logger.warning(
                    "no instruction proposed for predictor %s: %s", request.predictor, proposal.error
                )
            texts.append(proposal.text or predictors[request.predictor].signature.instructions)
        return texts

    def _grounding_for(self, program: Module) -> Grounding:
        # module descriptions are per predictor of the program grounded at construction
        count = len(program.predictors())
        described = self.grounding.module_descriptions
        if len(described) == count:
            return self.grounding
        return Grounding(self.grounding.dataset_summary, self.grounding.program_description, (None,) * count)

    def _tip(self) -> str:
        if not (self.use_tip and self.set_tip_randomly):
            return ""
        return TIPS[self.rng.choice(sorted(TIPS))]

    def _rollout(self) -> int:
        return self.rng.randint(0, _MAX_ROLLOUT)

"""A real GEPA merge on the simulated LM (a simulation, not a model) shows in the run's history and in
the dashboard's Pareto view: a candidate with two parents, each of its instructions one of theirs.

The program routes each arithmetic question to one of two predictors (by the parity of its first
number), so each predictor's instruction matters on its own half of the valset and gepa's merge
proposer has descendants of a common ancestor that changed different predictors to combine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dspex.configuration import context
from dspex.lm import LM
from dspex.modules import Predict
from dspex.observability.dashboard.pareto import pareto_view
from dspex.optimizers import GEPA
from dspex.primitives import Module, Prediction
from dspex.schemas import OptimizerCheckpoint
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.gepa_task import phrase_feedback_metric

SEED = 1


class Routed(Module):
    """Questions whose first number is even go to ``even``, the others to ``odd``."""

    def __init__(self) -> None:
        super().__init__()
        self.even = Predict("question -> answer")
        self.odd = Predict("question -> answer")

    def forward(self, question: str) -> Prediction:
        first = int(question.split()[2])
        predictor = self.even if first % 2 == 0 else self.odd
        result: Prediction = predictor(question=question)
        return result


async def merged_run(sim: SimulatedLMServer) -> dict[str, Any]:
    lm = LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False)
    optimizer = GEPA(
        phrase_feedback_metric(SEED), max_metric_calls=150, reflection_lm=lm, seed=SEED, use_merge=True
    )
    with context(lm=lm):
        run = optimizer.start(
            Routed(), trainset=arithmetic_dataset(16, seed=1), valset=arithmetic_dataset(10, seed=2)
        )
        while not run.done:
            await run.step()
    state: dict[str, Any] = json.loads(json.dumps(run.state_dict()))  # as the checkpoint topic holds it
    return state


def test_a_merged_candidate_shows_with_both_parents_in_the_history_and_the_view() -> None:
    with SimulatedLMServer(in_process=True) as sim:
        state = asyncio.run(merged_run(sim))
    parents = state["state"]["gepa_state"]["parent_program_for_candidate"]
    merges = [index for index, pair in enumerate(parents) if len(pair) == 2]
    assert merges, f"no merge in this run: {parents}"
    index = merges[0]
    first, second = parents[index]
    checkpoint = OptimizerCheckpoint(job_id="opt-merge", step=state["step"], optimizer="gepa", state=state)
    view = pareto_view(checkpoint)
    assert view is not None
    merged = view["candidates"][index]
    assert merged["merged"] and merged["parents"] == [first, second]
    assert merged["changed"] == []  # each predictor's instruction is one of its parents'
    programs = view["candidates"]
    for name, text in merged["instructions"].items():
        assert text in (programs[first]["instructions"][name], programs[second]["instructions"][name])
    assert merged["instructions"] not in (programs[first]["instructions"], programs[second]["instructions"])
    # the run's history names it as a merge too, with the candidate id the view shows
    labels = {t["label"]: t["candidate_id"] for t in state["history"]["trials"]}
    assert labels[f"candidate {index} (from {first}, {second})"] == merged["candidate_id"]

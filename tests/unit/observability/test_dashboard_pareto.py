"""A GEPA optimization's Pareto front on the dashboard: the view model of a checkpoint (hand-made, and
one of a real local GEPA run on the simulated LM, a simulation), and ``GET /api/jobs/{id}/pareto``
served over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from dashboard_fakes import FixedJobs, served

from dspex.configuration import context
from dspex.lm import LM
from dspex.modules import Predict
from dspex.observability.dashboard import create_app
from dspex.observability.dashboard.pareto import is_gepa_checkpoint, pareto_view, plain
from dspex.optimizers import GEPA
from dspex.schemas import JobStatus, OptimizerCheckpoint, OptimizeStatus, UsageRecord
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.testing.gepa_task import phrase_feedback_metric


def items(pairs: dict[Any, Any]) -> dict[str, Any]:
    """A dict with non-text keys in the checkpoint's tagged form."""
    return {"__items__": [[key, value] for key, value in pairs.items()]}


def members(*indices: int) -> dict[str, Any]:
    return {"__set__": list(indices)}


# Four candidates on three validation examples: the seed, two mutations of it, and a merge of the
# two. Example 0: the merge alone; example 1: a tie of 1 and 3; example 2: a tie of 0, 2 and 3.
SUBSCORES = [
    {0: 0.0, 1: 0.0, 2: 1.0},
    {0: 0.5, 1: 1.0, 2: 0.0},
    {0: 0.0, 1: 0.0, 2: 1.0},
    {0: 1.0, 1: 1.0, 2: 1.0},
]
HAND_MADE_GEPA_STATE = {
    "program_candidates": [
        {"classify": "Classify.", "answer": "Answer."},
        {"classify": "Classify carefully.", "answer": "Answer."},
        {"classify": "Classify.", "answer": "Answer briefly."},
        {"classify": "Classify carefully.", "answer": "Answer briefly."},
    ],
    "parent_program_for_candidate": [[None], [0], [0], [1, 2]],
    "prog_candidate_val_subscores": [items(s) for s in SUBSCORES],
    "pareto_front_valset": items({0: 1.0, 1: 1.0, 2: 1.0}),
    "program_at_pareto_front_valset": items({0: members(3), 1: members(1, 3), 2: members(0, 2, 3)}),
    "list_of_named_predictors": ["classify", "answer"],
    "i": 3,
    "total_num_evals": 27,
    "num_metric_calls_by_discovery": [0, 9, 15, 24],
}


def hand_made(gepa_state: dict[str, Any] | None = HAND_MADE_GEPA_STATE) -> OptimizerCheckpoint:
    trials = [
        {"step": 0, "kind": "full", "label": "candidate 0 (seed)", "candidate_id": "c-seed"},
        {"step": 2, "kind": "full", "label": "candidate 1 (from 0)", "candidate_id": "c-one"},
        {"step": 3, "kind": "full", "label": "candidate 3 (from 1, 2)", "candidate_id": "c-merge"},
    ]
    state = {
        "step": 4,
        "history": {"optimizer": "GEPA", "trials": trials},
        "state": {"version": 1, "max_metric_calls": 30, "gepa_state": gepa_state},
    }
    usage = UsageRecord(cost_usd=0.25, lm_calls=40)
    return OptimizerCheckpoint(job_id="opt-gepa", step=4, optimizer="gepa", state=state, usage=usage)


def test_the_view_of_a_hand_made_checkpoint_names_the_front_the_lineage_and_the_cost() -> None:
    live = UsageRecord(cost_usd=0.5, lm_calls=50, prompt_tokens=700, completion_tokens=80)
    view = pareto_view(hand_made(), usage=live)
    assert view is not None
    by_index = {c["index"]: c for c in view["candidates"]}
    assert [by_index[i]["parents"] for i in range(4)] == [[], [0], [0], [1, 2]]
    assert [by_index[i]["merged"] for i in range(4)] == [False, False, False, True]
    assert [by_index[i]["candidate_id"] for i in range(4)] == ["c-seed", "c-one", None, "c-merge"]
    assert by_index[2]["changed"] == ["answer"] and by_index[1]["changed"] == ["classify"]
    assert by_index[3]["changed"] == []  # each instruction is one of its parents'
    assert [by_index[i]["same_as"] for i in range(4)] == [None, None, None, None]
    assert by_index[3]["instructions"] == {"classify": "Classify carefully.", "answer": "Answer briefly."}
    assert [by_index[i]["score"] for i in range(4)] == [pytest.approx(1 / 3), 0.5, pytest.approx(1 / 3), 1.0]
    assert view["best_index"] == 3
    # ties included: every candidate that reached an example's best is on its front
    assert [(e["id"], e["front"], e["best_score"]) for e in view["examples"]] == [
        (0, [3], 1.0),
        (1, [1, 3], 1.0),
        (2, [0, 2, 3], 1.0),
    ]
    assert view["examples"][0]["scores"] == [0.0, 0.5, 0.0, 1.0]
    assert view["front"] == [0, 1, 2, 3]
    assert [by_index[i]["front_examples"] for i in range(4)] == [1, 1, 1, 3]
    # the merge is best wherever the others are: they are dominated, it is not
    assert [by_index[i]["dominated"] for i in range(4)] == [True, True, True, False]
    assert view["cost"] == {"cost_usd": 0.5, "lm_calls": 50, "prompt_tokens": 700, "completion_tokens": 80}
    assert (view["metric_calls"], view["max_metric_calls"], view["iteration"]) == (27, 30, 3)
    json.dumps(view)  # the API's body as it is


def test_without_a_live_usage_the_checkpoint_s_own_is_the_cost_so_far() -> None:
    view = pareto_view(hand_made())
    assert view is not None and view["cost"]["cost_usd"] == 0.25


def test_a_proposal_equal_to_an_earlier_candidate_names_it() -> None:
    state = dict(HAND_MADE_GEPA_STATE)
    state["program_candidates"] = [*state["program_candidates"][:3], state["program_candidates"][1]]
    view = pareto_view(hand_made(state))
    assert view is not None
    assert [c["same_as"] for c in view["candidates"]] == [None, None, None, 1]


def test_before_the_seed_was_evaluated_there_is_no_candidate_and_other_optimizers_have_no_view() -> None:
    empty = pareto_view(hand_made(gepa_state=None))
    assert empty is not None and empty["candidates"] == [] and empty["front"] == []
    mipro = OptimizerCheckpoint(job_id="opt-m", step=2, optimizer="mipro", state={"state": {"trials": []}})
    assert not is_gepa_checkpoint(mipro) and pareto_view(mipro) is None


def test_the_tagged_form_reads_back_as_plain_values() -> None:
    tagged = {"a": {"__tuple__": [1, {"__set__": [2, 3]}]}, "b": items({(1, "x"): 4})}
    assert plain(tagged) == {"a": [1, [2, 3]], "b": {(1, "x"): 4}}
    assert plain({"b": {"__items__": [[[1, "x"], 4]]}}) == {"b": {(1, "x"): 4}}


# ----------------------------------------------------------------------------- a real GEPA run


async def gepa_checkpoint(sim: SimulatedLMServer) -> tuple[OptimizerCheckpoint, str, UsageRecord]:
    lm = LM("openai/sim", api_base=sim.base_url, api_key="sim", cache=False)
    optimizer = GEPA(phrase_feedback_metric(4), max_metric_calls=40, reflection_lm=lm, seed=4)
    with context(lm=lm):
        run = optimizer.start(Predict("question -> answer"), trainset=arithmetic_dataset(8, seed=1),
                              valset=arithmetic_dataset(6, seed=2))  # fmt: skip
        while not run.done:
            await run.step()
    state = json.loads(json.dumps(run.state_dict()))  # as the topic holds it
    usage = UsageRecord(**run.history.usage.model_dump())
    checkpoint = OptimizerCheckpoint(job_id="opt-real", step=run.step_index, optimizer="gepa", state=state)
    return checkpoint, candidate_id(run.result()), usage


def test_the_view_of_a_real_gepa_run_agrees_with_its_scores_and_its_result() -> None:
    with SimulatedLMServer(in_process=True) as sim:
        checkpoint, best_id, usage = asyncio.run(gepa_checkpoint(sim))
    view = pareto_view(checkpoint, usage=usage)
    assert view is not None
    gepa = checkpoint.state["state"]["gepa_state"]
    candidates = view["candidates"]
    assert len(candidates) >= 2 and candidates[0]["parents"] == []
    assert [c["instructions"] for c in candidates] == gepa["program_candidates"]
    for c in candidates[1:]:
        assert c["parents"] and all(p < c["index"] for p in c["parents"])
    # every trial of the history is a candidate's valset evaluation: same id, same score (trials
    # are percentages, the view keeps the metric's scale)
    trials = checkpoint.state["history"]["trials"]
    expected = [(t["candidate_id"], pytest.approx(t["score"] / 100)) for t in trials]
    assert [(c["candidate_id"], c["score"]) for c in candidates] == expected
    assert candidates[view["best_index"]]["candidate_id"] == best_id
    # the front of each example, recomputed from the per-example scores
    scores = [plain(s) for s in gepa["prog_candidate_val_subscores"]]
    for example in view["examples"]:
        top = max(s[example["id"]] for s in scores)
        assert example["best_score"] == top
        assert example["front"] == [i for i, s in enumerate(scores) if s[example["id"]] == top]
    assert len(view["examples"]) == 6
    assert view["front"] == sorted({i for e in view["examples"] for i in e["front"]})
    assert view["cost"]["lm_calls"] == usage.lm_calls > 0


# ----------------------------------------------------------------------------- the route


GEPA_JOB = OptimizeStatus(
    job_id="opt-gepa", state="running", optimizer="gepa", usage=UsageRecord(cost_usd=0.75, lm_calls=60)
)
WAITING = OptimizeStatus(job_id="opt-new", state="running", optimizer="gepa")
MIPRO_JOB = OptimizeStatus(job_id="opt-mipro", state="running", optimizer="mipro")
EVAL_JOB = JobStatus(job_id="ev-1", state="running", total_tasks=4)


JOBS = FixedJobs([GEPA_JOB, WAITING, MIPRO_JOB, EVAL_JOB])


async def latest(status: OptimizeStatus) -> OptimizerCheckpoint | None:
    return hand_made() if status.job_id == GEPA_JOB.job_id else None


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with served(create_app(JOBS, checkpoints=latest)) as base:
        yield base


async def test_the_route_answers_for_gepa_runs_only(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        found = await client.get("/api/jobs/opt-gepa/pareto")
        waiting = await client.get("/api/jobs/opt-new/pareto")
        mipro = await client.get("/api/jobs/opt-mipro/pareto")
        evaluation = await client.get("/api/jobs/ev-1/pareto")
        unknown = await client.get("/api/jobs/nope/pareto")
    assert found.status_code == 200
    body = found.json()
    assert body["checkpoint"] is True and len(body["candidates"]) == 4 and body["front"] == [0, 1, 2, 3]
    assert body["cost"]["cost_usd"] == 0.75  # the status's, newer than the checkpoint's
    assert waiting.status_code == 200
    assert waiting.json() == {
        "job_id": "opt-new",
        "checkpoint": False,
        "candidates": [],
        "cost": {"cost_usd": 0.0, "lm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0},
    }
    assert (mipro.status_code, evaluation.status_code, unknown.status_code) == (400, 400, 404)
    assert "GEPA" in mipro.json()["error"]


async def test_a_dashboard_that_reads_no_checkpoints_says_so() -> None:
    async with served(create_app(JOBS)) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await client.get("/api/jobs/opt-gepa/pareto")
    assert answer.status_code == 404 and "checkpoints" in answer.json()["error"]

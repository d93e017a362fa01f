"""Sync dspex calls in a real Jupyter kernel, which runs every cell inside its own event loop.

Each test builds a notebook with nbformat and executes it with nbclient on an ipykernel kernel (a
separate process): a sync module call, a sync ``Evaluate(...)(program)``, a sync optimizer
``compile`` and, against the session's Kafka broker with real worker processes, a sync
``dspex.Client(...).evaluate(...)``. LM calls go to the simulated LM over HTTP; settings come from
``dspex.context(...)`` blocks only (nothing is configured), so they must travel with every call.
Each cell prints one JSON line, which the test reads back.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from dspex.dev.stack import LocalStack, WorkerKind
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.topics import TopicRegistry
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

DEVSET_SIZE = 12
CELL_TIMEOUT_S = 240
READY_TIMEOUT_S = 150.0

SETUP = """
import asyncio
import json

import dspex
from dspex.metrics import numeric_equal
from dspex.testing import arithmetic_dataset

loop = asyncio.get_running_loop()  # raises if this cell were not inside the kernel's running loop
lm = dspex.LM("openai/sim", api_base={api_base!r}, cache=True, cache_dir={cache_dir!r})
metric = numeric_equal("answer")
devset = arithmetic_dataset({devset_size}, seed=5)
trainset = arithmetic_dataset(10, seed=6)
qa = dspex.ChainOfThought("question -> answer")
print(json.dumps({{"loop_running": loop.is_running(), "configured_lm": dspex.settings.lm is not None}}))
"""

MODULE_CALL = """
with dspex.context(lm=lm):
    pred = qa(question=devset[0].question)
print(json.dumps({"answer": pred.answer, "has_reasoning": bool(pred.reasoning),
                  "same_loop": asyncio.get_running_loop() is loop}))
"""

AWAIT_CALL = """
with dspex.context(lm=lm):
    awaited = await qa.acall(question=devset[0].question)
print(json.dumps({"answer": awaited.answer}))
"""

EVALUATE = """
with dspex.context(lm=lm):
    local = dspex.Evaluate(devset=devset, metric=metric, num_threads=4)(qa)
print(json.dumps({"score": local.score, "processed": local.processed, "errors": local.errors}))
"""

COMPILE = """
optimizer = dspex.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0)
with dspex.context(lm=lm):
    compiled = optimizer.compile(dspex.Predict("question -> answer"), trainset=trainset)
    compiled_pred = compiled(question=devset[1].question)
print(json.dumps({"demos": len(compiled.predictors()[0].demos), "answer": compiled_pred.answer}))
"""

CLIENT = """
with dspex.Client({bootstrap!r}, prefix={prefix!r}) as client, dspex.context(lm=lm):
    remote = client.evaluate(qa, devset, "numeric_equal:answer", display_progress=False, timeout=180)
print(json.dumps({{"score": remote.score, "processed": remote.processed, "errors": remote.errors}}))
"""


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedLMServer]:
    # its own process, as the kernel and the workers are: all three reach it over HTTP
    with SimulatedLMServer(latency=0.01, log_path=tmp_path / "sim-lm.log") as server:
        yield server


@pytest.fixture(autouse=True)
def _jupyter_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # jupyter_core warns (an error here) unless told to use platformdirs; runtime files stay per test
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))


def local_cells(sim: SimulatedLMServer, cache_dir: Path) -> list[str]:
    setup = SETUP.format(api_base=sim.base_url, cache_dir=str(cache_dir), devset_size=DEVSET_SIZE)
    return [setup, MODULE_CALL, AWAIT_CALL, EVALUATE, COMPILE]


def run_notebook(cells: list[str], work_dir: Path) -> list[dict[str, Any]]:
    """Execute ``cells`` in a fresh kernel; the JSON line each printed (fails on any cell error)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source).strip()) for source in cells]
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(work_dir)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"a notebook cell failed:\n{exc}", pytrace=False)
    nbformat.write(notebook, work_dir / "executed.ipynb")  # kept for a look after a failure
    return [_printed(cell) for cell in notebook.cells]


def _printed(cell: Any) -> dict[str, Any]:
    assert not [out for out in cell.outputs if out.output_type == "error"], cell.outputs
    text = "".join(out.text for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")
    return dict(json.loads(text.strip().splitlines()[-1]))


def check_local_cells(outputs: list[dict[str, Any]], sim: SimulatedLMServer) -> None:
    setup, module_call, awaited, evaluated, compiled = outputs[:5]
    assert setup == {"loop_running": True, "configured_lm": False}
    assert module_call["answer"] and module_call["has_reasoning"] and module_call["same_loop"]
    assert awaited["answer"] == module_call["answer"]
    assert (evaluated["processed"], evaluated["errors"]) == (DEVSET_SIZE, 0)
    assert 0 < evaluated["score"] < 100  # the simulated LM gets some right, some wrong
    assert compiled["demos"] == 2 and compiled["answer"]
    assert sim.control.stats()["completions_ok"] > DEVSET_SIZE


def test_sync_calls_work_in_a_notebook(sim: SimulatedLMServer, tmp_path: Path) -> None:
    outputs = run_notebook(local_cells(sim, tmp_path / "lm-cache"), tmp_path)
    check_local_cells(outputs, sim)


# ----------------------------------------------------------------------------------------------
# With the cluster: the session's broker and real worker processes
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[LocalStack]:
    """One aggregator, one scorer and one predictor under this test's prefix, owning their partitions."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(settings, TopicRegistry(topic_prefix))
    with LocalStack(bootstrap=kafka_bootstrap, prefix=topic_prefix, work_dir=tmp_path / "workers") as workers:
        for kind in ("aggregate", "score", "predict"):
            workers.start(kind)
        _wait_ready(workers, settings, topic_prefix)
        yield workers


def _wait_ready(stack: LocalStack, settings: KafkaSettings, prefix: str) -> None:
    admin = AdminClient(settings.confluent())
    kinds: tuple[WorkerKind, ...] = ("aggregate", "score", "predict")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(_owns_partitions(admin, f"{prefix}{kind}") for kind in kinds):
        stack.check_running()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name} ---\n{w.log_tail()}" for w in stack.workers)
            pytest.fail(f"workers did not own their partitions in {READY_TIMEOUT_S:g} s:\n{logs}")
        time.sleep(0.5)


def _owns_partitions(admin: AdminClient, group: str) -> bool:
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    except KafkaException:  # a fresh group's coordinator can time out at first: not ready yet
        return False
    return bool(description.members) and all(m.assignment.topic_partitions for m in description.members)


@pytest.mark.kafka
def test_sync_client_evaluate_works_in_a_notebook(
    sim: SimulatedLMServer, stack: LocalStack, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    cells = [
        *local_cells(sim, tmp_path / "lm-cache"),
        CLIENT.format(bootstrap=kafka_bootstrap, prefix=topic_prefix),
    ]
    outputs = run_notebook(cells, tmp_path)
    check_local_cells(outputs, sim)
    local, remote = outputs[3], outputs[5]
    assert (remote["processed"], remote["errors"]) == (DEVSET_SIZE, 0)
    # the simulated LM is deterministic: cluster equals local (which DSPy-style rounds to 2 decimals)
    assert remote["score"] == pytest.approx(local["score"], abs=0.01)
    stack.check_running()

"""A BootstrapFinetune compile killed (SIGKILL) while its fine-tuning job runs: the rerun finds the job
by its metadata and waits for it; the simulated provider (a simulation) shows one job, not two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dspex
from dspex.lm.finetune import OpenAIProvider
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = "numeric_equal:answer"
_SCRIPT = """
import sys
import dspex
from dspex.lm.finetune import OpenAIProvider
from dspex.testing import arithmetic_dataset

provider = OpenAIProvider(poll_interval=0.05)
lm = dspex.LM("sim/arith", api_base=sys.argv[1], cache_dir=sys.argv[2], provider=provider)
student = dspex.Predict("question -> answer")
student.set_lm(lm)
optimizer = dspex.BootstrapFinetune(metric="numeric_equal:answer", adapter=dspex.ChatAdapter())
optimizer.compile(student, trainset=arithmetic_dataset(30, seed=11))
"""


def compile_here(base_url: str, cache_dir: Path) -> dspex.Module:
    lm = dspex.LM(
        "sim/arith", api_base=base_url, cache_dir=cache_dir, provider=OpenAIProvider(poll_interval=0.05)
    )
    student = dspex.Predict("question -> answer")
    student.set_lm(lm)
    # the adapter named, as in the script: the records (and so the job's key) must be the same
    optimizer = dspex.BootstrapFinetune(metric=METRIC, adapter=dspex.ChatAdapter())
    return optimizer.compile(student, trainset=arithmetic_dataset(30, seed=11))


def test_a_killed_compile_reattaches_to_its_running_job(tmp_path: Path) -> None:
    with SimulatedLMServer(in_process=True, finetune_seconds=600.0) as sim:
        process = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, sim.base_url, str(tmp_path / "first")],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        try:
            sim.control.wait_until(lambda stats: stats["fine_tuning"]["created"] == 1, timeout=120)
            assert process.poll() is None, "the first compile ended before it was killed"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        sim.control.configure(finetune_seconds=0.5)  # the job ends soon now
        tuned = compile_here(sim.base_url, tmp_path / "second")  # another cache: the same answers anyway
        stats = sim.control.stats()["fine_tuning"]
        assert stats["created"] == 1 and stats["by_status"] == {"succeeded": 1}, stats
        assert tuned.predictors()[0].lm.model.startswith("sim/ft:arith:dspex:ftjob-")

"""Optimizers (DSPy's teleprompters) written once against an executor seam.

    from dspex.optimizers import BootstrapFewShotWithRandomSearch, LocalExecutor

    optimizer = BootstrapFewShotWithRandomSearch(metric="numeric_equal:answer", num_candidate_programs=8,
                                                 max_lm_calls=5_000)
    best = optimizer.compile(program, trainset=train, valset=val, executor=LocalExecutor(concurrency=128))
    optimizer.history.scores, optimizer.history.best_score, optimizer.history.usage

Every optimizer is a short loop over steps (:class:`OptimizerRun`): ``optimizer.start(...)`` gives a
run whose ``step()`` does one executor call and whose ``state_dict()`` is JSON between steps, which
is what a cluster worker checkpoints and resumes from.

DSPy code reaches this package as ``dspex.teleprompt`` (``Teleprompter`` is ``Optimizer``), and its
helpers as ``dspex.teleprompt.utils`` (:mod:`dspex.optimizers.utils`).
"""

from __future__ import annotations

from dspex.optimizers._base import Optimizer, OptimizerRun, Teleprompter
from dspex.optimizers.bettertogether import BetterTogether
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.budget import Budget
from dspex.optimizers.copro import COPRO
from dspex.optimizers.ensemble import Ensemble, EnsembledProgram
from dspex.optimizers.executor import Executor, KafkaExecutor, LocalExecutor
from dspex.optimizers.finetune import BootstrapFinetune
from dspex.optimizers.gepa import GEPA
from dspex.optimizers.grpo import GRPO
from dspex.optimizers.history import Trial, TrialHistory
from dspex.optimizers.infer_rules import InferRules
from dspex.optimizers.knn import KNN, KNNFewShot, KNNFewShotProgram
from dspex.optimizers.labeled import LabeledFewShot
from dspex.optimizers.mipro import MIPROv2
from dspex.optimizers.optuna_demos import BootstrapFewShotWithOptuna
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.optimizers.registry import OPTIMIZERS, optimizer_class, optimizer_from_name
from dspex.optimizers.simba import SIMBA

BootstrapRS = BootstrapFewShotWithRandomSearch  # DSPy's short name

__all__ = [
    "COPRO",
    "GEPA",
    "GRPO",
    "KNN",
    "OPTIMIZERS",
    "SIMBA",
    "BetterTogether",
    "BootstrapFewShot",
    "BootstrapFewShotWithOptuna",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapFinetune",
    "BootstrapRS",
    "Budget",
    "Ensemble",
    "EnsembledProgram",
    "Executor",
    "InferRules",
    "KNNFewShot",
    "KNNFewShotProgram",
    "KafkaExecutor",
    "LabeledFewShot",
    "LocalExecutor",
    "MIPROv2",
    "Optimizer",
    "OptimizerRun",
    "Teleprompter",
    "Trial",
    "TrialHistory",
    "optimizer_class",
    "optimizer_from_name",
]

"""``BootstrapFinetune``: the teacher's passing traces become fine-tuning data for each predictor's LM.

    optimizer = BootstrapFinetune(metric=metric, train_kwargs={"n_epochs": 1})
    student.set_lm(tunable_lm)                 # every predictor needs its own LM
    tuned = optimizer.compile(student, trainset=train)

As DSPy's: the teacher (the student when None) runs on the trainset; with a metric, the runs that
fail it are dropped; each trace step becomes one example of the predictor's LM, formatted by the
adapter's ``format_finetune_data`` (``multitask=True``: one data set per LM, else one per
predictor); every LM is fine-tuned (``lm.finetune(train_data=..., train_data_format=...,
train_kwargs=...)`` returning a job whose ``result()`` is the new LM) and the predictors get the
tuned LMs (no demos with ``exclude_demos=True``).

dspex's own :class:`~dspex.LM` fine-tunes through its provider (by default the OpenAI-compatible
files and ``fine_tuning/jobs`` API at the LM's own endpoint, see :mod:`dspex.lm.finetune`); any LM
with a ``finetune`` method works the same way, and one without fails compile with a
ConfigurationError before anything is fine-tuned. ``metric`` may be a callable or a name
(``"numeric_equal:answer"``), as for the other optimizers.

What differs: compile is a step-by-step run (:mod:`.finetune_run`: teacher traces, jobs started,
jobs waited for, optionally the tuned program scored on a ``valset``), so it runs as a cluster
optimization (``--optimizer bootstrap-finetune``): the teacher runs go through the run's executor
(the cluster's predictors), the checkpoint keeps the training records, file and job ids, and a
restarted worker re-attaches to the running job instead of starting another. A teacher run that
raises is left out and counted against ``max_errors`` (DSPy raises at the first). A trainset whose
runs all fail the metric is a ConfigurationError before any upload (DSPy would send an empty file);
a failed fine-tuning job ends compile with its :class:`~dspex.errors.FinetuneError` (job id and the
provider's reason), never a model that is an exception. The jobs are started together and waited
for together (DSPy bounds their number by ``num_threads``).
"""

from __future__ import annotations

import inspect
import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dspex._sync import run_sync
from dspex.adapters import ChatAdapter
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.lm.base import BaseLM
from dspex.lm.finetune import OpenAIProvider
from dspex.metrics import TraceMetric, resolve_metric
from dspex.modules import Predict
from dspex.optimizers._base import (
    OptimizerRun,
    Teleprompter,
    check_examples,
    check_structure,
    reject_unknown,
)
from dspex.optimizers.budget import Budget
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.finetune_run import FinetuneRun
from dspex.primitives import Example, Module

__all__ = [
    "BootstrapFinetune",
    "FinetuneTeleprompter",
    "all_predictors_have_lms",
    "assert_all_predictors_have_lms",
    "build_call_data_from_trace",
    "kill_lms",
    "launch_lms",
    "prepare_student",
    "prepare_teacher",
]

logger = logging.getLogger(__name__)


class FinetuneTeleprompter(Teleprompter):
    """Base of the optimizers that fine-tune: ``train_kwargs`` for every LM, or per LM."""

    def __init__(self, train_kwargs: Mapping[Any, Any] | None = None) -> None:
        super().__init__()
        self.train_kwargs: Mapping[Any, Any] = self.convert_to_lm_dict(train_kwargs or {})

    @staticmethod
    def convert_to_lm_dict(arg: Any) -> Mapping[Any, Any]:
        """``arg`` itself when it maps LMs to values, else a mapping that gives ``arg`` for any LM."""
        if arg and isinstance(arg, Mapping) and all(isinstance(key, BaseLM) for key in arg):
            return arg
        return defaultdict(lambda: arg)


class BootstrapFinetune(FinetuneTeleprompter):
    """DSPy's ``BootstrapFinetune(metric=None, multitask=True, train_kwargs=None, adapter=None,
    exclude_demos=False, num_threads=None)``, with dspex's step-by-step run (:mod:`.finetune_run`).

    dspex's own knobs: ``provider_settings`` (JSON: :class:`~dspex.lm.finetune.OpenAIProvider`'s
    arguments, e.g. ``{"poll_interval": 5, "max_cost_usd": 20}``) gives every LM of the run that
    provider (a cluster job's LMs have the default one otherwise); ``wait_step_s``: the longest a
    step waits on running jobs (each wait is a checkpoint); ``max_lm_calls`` / ``max_cost_usd`` /
    ``max_errors`` as for the other optimizers.
    """

    def __init__(
        self,
        metric: TraceMetric | str | None = None,
        multitask: bool = True,
        train_kwargs: Mapping[Any, Any] | None = None,
        adapter: Any = None,
        exclude_demos: bool = False,
        num_threads: int | None = None,
        *,
        provider_settings: Mapping[str, Any] | None = None,
        wait_step_s: float = 30.0,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        max_errors: int | None = None,
    ) -> None:
        super().__init__(train_kwargs=train_kwargs)
        self.metric = None if metric is None else resolve_metric(metric)
        self.multitask = multitask
        self.adapter: Mapping[Any, Any] = self.convert_to_lm_dict(adapter)
        self.exclude_demos = exclude_demos
        self.num_threads = num_threads
        self.provider_settings = _provider_settings(provider_settings)
        if not (isinstance(wait_step_s, int | float) and wait_step_s > 0):
            raise ConfigurationError(f"wait_step_s must be a number of seconds > 0, got {wait_step_s!r}")
        self.wait_step_s = float(wait_step_s)
        self.max_errors = max_errors
        self._budget = Budget(max_lm_calls, max_cost_usd)

    def bind_worker_lms(self, pool: Any) -> None:
        """In a cluster worker: a ``provider_settings`` upload target other than the LM's own API
        base must be one this worker allows (SecurityPolicyError before the run starts); the LMs
        themselves were checked when the worker built them."""
        base = self.provider_settings.get("api_base")
        if base is not None:
            pool.policy.check_lm(str(base), self.provider_settings.get("api_key_env"))
        for extra in self.provider_settings.get("allowed_api_bases") or ():
            pool.policy.check_lm(str(extra), self.provider_settings.get("api_key_env"))

    def compile(  # type: ignore[override]  # DSPy's signature: trainset positional, teacher may be a list
        self,
        student: Module,
        trainset: Sequence[Example],
        teacher: Module | Sequence[Module] | None = None,
        **kwargs: Any,
    ) -> Module:
        """The student with fine-tuned LMs (``_compiled = True``): :meth:`start`'s run, every step
        taken (inside async code, ``await optimizer.acompile(...)``)."""
        return run_sync(self.acompile(student, trainset=trainset, teacher=teacher, **kwargs))

    def start(
        self,
        student: Module,
        *,
        trainset: Sequence[Example],
        teacher: Module | Sequence[Module] | None = None,
        valset: Sequence[Example] | None = None,
        executor: Executor | None = None,
        state: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> OptimizerRun:
        """The run, checked and ready for its first step (or resumed from ``state``): every
        predictor needs its own LM; with ``valset`` (and a metric) the tuned program is scored on it
        as a last step."""
        reject_unknown("BootstrapFinetune.compile", unknown, BootstrapFinetune.start)
        given = _predictor_lms(student)
        copies: dict[int, Any] = {}  # one copy per distinct LM: multitask groups stay as they were
        lms = [copies.setdefault(id(lm), self._with_provider(lm)) for lm in given]
        for predictor, lm in zip(student.predictors(), lms, strict=True):
            predictor.lm = lm
        teachers: list[Module | None] = list(teacher) if isinstance(teacher, list | tuple) else [teacher]  # type: ignore[list-item]
        train = check_examples("trainset", trainset)
        val = check_examples("valset", valset) if valset else None
        run = FinetuneRun(
            self,
            student,
            [prepare_teacher(student, t) for t in teachers],
            train,
            val,
            lms,
            given,
            executor=executor or LocalExecutor(num_threads=self.num_threads),
            budget=Budget(self._budget.max_lm_calls, self._budget.max_cost_usd),
            max_errors=self.max_errors,
        )
        if state is not None:
            run.load_state_dict(state)
        return run

    def _with_provider(self, lm: Any) -> Any:
        """``lm`` with the run's ``provider_settings`` provider, when given (dspex's LM)."""
        if not self.provider_settings or not callable(getattr(lm, "copy", None)):
            return lm
        return lm.copy(provider=OpenAIProvider(**self.provider_settings))

    def finetune_lms_replaced(self) -> bool:
        """Whether ``finetune_lms`` is not this class's own (a subclass overrides it, or it is set on
        this object): the run then trains through it instead of starting each LM's job itself."""
        return "finetune_lms" in vars(self) or type(self).finetune_lms is not BootstrapFinetune.finetune_lms

    @staticmethod
    def finetune_lms(finetune_dict: Mapping[Any, dict[str, Any]]) -> dict[Any, Any]:
        """Start every fine-tuning job, then wait for each: ``{key: tuned LM}``."""
        for job in finetune_dict.values():
            if not callable(getattr(job["lm"], "finetune", None)):
                raise ConfigurationError(
                    f"{job['lm']!r} cannot be fine-tuned: dspex's LM has no fine-tuning API; give the "
                    "predictors an LM that implements finetune(train_data, train_data_format, train_kwargs)"
                )
        started = {}
        for key, job in finetune_dict.items():
            arguments = dict(job)
            lm = arguments.pop("lm")
            _call_if_present(lm, "kill")  # a local model frees its resources for training
            started[key] = lm.finetune(**arguments)
        tuned = {}
        for key, job in started.items():
            result = job.result()
            if isinstance(result, Exception):
                raise result
            tuned[key] = result
        return tuned

    def _prepare_finetune_data(
        self, trace_data: Sequence[Mapping[str, Any]], lm: Any, pred_ind: int | None = None
    ) -> tuple[list[Any], str]:
        """The training examples of one LM (of one predictor when ``pred_ind`` is given), shuffled
        with ``Random(0)``, and their format (``"chat"``)."""
        if self.metric:
            trace_data = [item for item in trace_data if item["score"]]
        adapter = self.adapter[lm] or current_settings().adapter or ChatAdapter()
        data = [
            build_call_data_from_trace(item["trace"], index, adapter, exclude_demos=self.exclude_demos)
            for item in trace_data
            for index in range(len(item["trace"]))
            if pred_ind is None or index == pred_ind
        ]
        random.Random(0).shuffle(data)
        return data, "chat"


def build_call_data_from_trace(
    trace: Sequence[Any], pred_ind: int, adapter: Any, exclude_demos: bool = False
) -> Any:
    """The adapter's fine-tuning example for step ``pred_ind`` of a trace."""
    predictor, inputs, outputs = trace[pred_ind]
    return adapter.format_finetune_data(
        signature=predictor.signature,
        demos=[] if exclude_demos else predictor.demos,
        inputs=inputs,
        outputs=outputs,
    )


def _provider_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` checked as :class:`OpenAIProvider` arguments (ConfigurationError naming the
    unknown ones); an empty dict for None."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise ConfigurationError(f"provider_settings must be a mapping, got {type(settings).__name__}")
    accepted = set(inspect.signature(OpenAIProvider.__init__).parameters) - {"self"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ConfigurationError(
            f"provider_settings: unknown argument(s) {unknown}; OpenAIProvider takes {sorted(accepted)}"
        )
    OpenAIProvider(**settings)  # its own checks (poll_interval > 0), now rather than at the first job
    return dict(settings)


def _predictor_lms(program: Module) -> list[Any]:
    lms = []
    for index, predictor in enumerate(program.predictors()):
        if predictor.lm is None:
            raise ConfigurationError(
                f"Predictor {index} does not have an LM assigned. Please ensure the module's predictors "
                "have their LM set before fine-tuning. You can set it using: your_module.set_lm(your_lm)"
            )
        lms.append(predictor.lm)
    return lms


def all_predictors_have_lms(program: Module) -> bool:
    """True when every predictor of ``program`` has its own LM."""
    return all(predictor.lm for predictor in program.predictors())


def assert_all_predictors_have_lms(program: Module, role: str = "program") -> None:
    """ConfigurationError (a ValueError) naming the predictors of ``program`` without an LM."""
    missing = [path for path, predictor in program.named_predictors() if not predictor.lm]
    if missing:
        raise ConfigurationError(
            f"The {role} program must have a language model set on every predictor, but these have "
            f"none: {missing}. Assign an LM to them; `{role}.set_lm(lm)` sets every predictor and "
            "overwrites LMs that are already set."
        )


def prepare_student(student: Module) -> Module:
    """The student as it is; a compiled one is refused (it was optimized already)."""
    if getattr(student, "_compiled", False):
        raise ConfigurationError("The student program should not be compiled.")
    return student


def prepare_teacher(student: Module, teacher: Module | None = None) -> Module:
    """The teacher (the student when None): same structure, no predictor shared with the student."""
    if teacher is None:
        return student
    check_structure(student, teacher)
    shared = {id(p) for p in student.predictors()} & {id(p) for p in teacher.predictors()}
    if shared:
        names = [path for path, p in student.named_predictors() if id(p) in shared]
        raise ConfigurationError(f"The programs share the following predictor(s) with each other: {names}")
    if not all(isinstance(p, Predict) for p in teacher.predictors()):
        raise ConfigurationError("every predictor of the teacher must be a Predict")
    return teacher


def _unique_lms(program: Module) -> list[Any]:
    unique: dict[int, Any] = {}
    for predictor in program.predictors():
        if predictor.lm is not None:
            unique.setdefault(id(predictor.lm), predictor.lm)
    return list(unique.values())


def _call_if_present(lm: Any, name: str) -> None:
    method = getattr(lm, name, None)
    if callable(method):
        method()


def launch_lms(program: Module) -> None:
    """``launch()`` every LM of the program that has one (local models; API LMs have nothing to do)."""
    for lm in _unique_lms(program):
        _call_if_present(lm, "launch")


def kill_lms(program: Module) -> None:
    """``kill()`` every LM of the program that has one."""
    for lm in _unique_lms(program):
        _call_if_present(lm, "kill")

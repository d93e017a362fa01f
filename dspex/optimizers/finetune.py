"""``BootstrapFinetune``: the teacher's passing traces become fine-tuning data for each predictor's LM.

    optimizer = BootstrapFinetune(metric=metric, train_kwargs={"n_epochs": 1})
    student.set_lm(tunable_lm)                 # every predictor needs its own LM
    tuned = optimizer.compile(student, trainset=train)

As DSPy's: the teacher (the student when None) runs on the trainset (:func:`bootstrap_trace_data`);
with a metric, the runs that fail it are dropped; each trace step becomes one example of the
predictor's LM, formatted by the adapter's ``format_finetune_data`` (``multitask=True``: one data set
per LM, else one per predictor); every LM is fine-tuned (``lm.finetune(train_data=...,
train_data_format=..., train_kwargs=...)`` returning a job whose ``result()`` is the new LM) and the
predictors get the tuned LMs (no demos with ``exclude_demos=True``).

What differs: dspex's own :class:`~dspex.LM` speaks OpenAI-compatible chat and embeddings and has no
fine-tuning API, so fine-tuning needs an LM that implements ``finetune`` (a :class:`dspex.BaseLM`
subclass); with any other, compile fails with a ConfigurationError before anything is fine-tuned.
The jobs are started one after another and waited for together (DSPy also bounds their number by
``num_threads``; here there is no thread per job to bound).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.adapters import ChatAdapter
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError
from dspex.lm.base import BaseLM
from dspex.metrics import TraceMetric
from dspex.modules import Predict
from dspex.optimizers._base import Teleprompter, check_structure
from dspex.optimizers.bootstrap_trace import bootstrap_trace_data
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
    exclude_demos=False, num_threads=None)``."""

    def __init__(
        self,
        metric: TraceMetric | None = None,
        multitask: bool = True,
        train_kwargs: Mapping[Any, Any] | None = None,
        adapter: Any = None,
        exclude_demos: bool = False,
        num_threads: int | None = None,
    ) -> None:
        super().__init__(train_kwargs=train_kwargs)
        self.metric = metric
        self.multitask = multitask
        self.adapter: Mapping[Any, Any] = self.convert_to_lm_dict(adapter)
        self.exclude_demos = exclude_demos
        self.num_threads = num_threads

    def compile(  # type: ignore[override]  # DSPy's signature: teacher may be a list
        self,
        student: Module,
        trainset: Sequence[Example],
        teacher: Module | Sequence[Module] | None = None,
    ) -> Module:
        """The student with fine-tuned LMs (``_compiled = True``); ``acompile`` runs this in a thread
        (fine-tuning jobs block)."""
        lms = _predictor_lms(student)  # every predictor's LM, checked before any run
        teachers: list[Module | None] = list(teacher) if isinstance(teacher, list | tuple) else [teacher]  # type: ignore[list-item]
        trace_data: list[Any] = []
        for program in (prepare_teacher(student, t) for t in teachers):
            trace_data += bootstrap_trace_data(
                program, list(trainset), metric=self.metric, num_threads=self.num_threads
            )
        jobs: dict[tuple[Any, int | None], dict[str, Any]] = {}
        for index, lm in enumerate(lms):
            key = (lm, None if self.multitask else index)
            if key not in jobs:
                data, data_format = self._prepare_finetune_data(trace_data, lm, key[1])
                logger.info("%d examples to fine-tune %s on", len(data), getattr(lm, "model", lm))
                jobs[key] = {
                    "lm": lm,
                    "train_data": data,
                    "train_data_format": data_format,
                    "train_kwargs": self.train_kwargs[lm],
                }
        tuned = self.finetune_lms(jobs)
        for index, predictor in enumerate(student.predictors()):
            result = tuned[(lms[index], None if self.multitask else index)]
            if isinstance(result, Exception):
                raise RuntimeError(f"Finetuned LM for predictor {index} failed.") from result
            predictor.lm = result
            if self.exclude_demos:
                predictor.demos = []
        student._compiled = True
        return student

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

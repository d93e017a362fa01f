"""Examples, predictions, and the :class:`Module` base that every program is built from.

A module is called with keyword inputs and returns a :class:`Prediction`. ``await module.acall(...)``
is the native form; ``module(...)`` is a thin sync wrapper over it (see :mod:`dspex._sync`).

The outermost call of a program opens a trace and a usage tracker in ``contextvars``: every predictor
call underneath (however deep, in the same task, in tasks it gathers, or in the worker thread of a sync
``forward``) appends one :class:`TraceStep`, and every LM call adds its usage. The prediction returned
carries both (``pred.trace``, ``pred.usage``). Nothing is global, so many calls can run at once::

    preds = await asyncio.gather(*(program.acall(question=q) for q in questions))
    preds[0].trace[0].predictor_path, preds[0].usage.total_tokens
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import logging
import re
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeAlias, cast, overload

from dspex import _dspy_state, serialization
from dspex._callers import CALLER_MODULES
from dspex._parallel import call_inputs, resolve_concurrency, run_bounded
from dspex._sync import run_in_thread, run_sync
from dspex.adapters import Adapter
from dspex.configuration import call_usage_tracker
from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.lm import BaseLM
from dspex.lm.usage import track_usage
from dspex.primitives import saving
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.utils.callback import ACTIVE_CALL_ID, active_callbacks, listening, notify_end, notify_start

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = [
    "BatchWithFailures",
    "Module",
    "Predictor",
    "TraceStep",
    "detached_trace",
    "record_trace_step",
    "set_attribute_by_name",
]

logger = logging.getLogger(__name__)

UNATTACHED_PATH = "<unattached>"

BatchWithFailures: TypeAlias = tuple[
    list[Prediction | None], list[Example | Mapping[str, Any]], list[Exception]
]
"""What ``batch(..., return_failed_examples=True)`` gives (DSPy's triple): the results in example order
(None for a failed one), the failed examples and their exceptions, in example order."""


@dataclass(frozen=True)
class TraceStep:
    """One predictor call: where the predictor sits in the program, and what went in and out."""

    predictor_path: str
    predictor: Predictor
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class _TraceCollector:
    """The steps of one module call; each step also goes to every enclosing call's collector."""

    __slots__ = ("parent", "paths", "steps")

    def __init__(self, parent: _TraceCollector | None, paths: Mapping[int, str]) -> None:
        self.parent = parent
        self.paths = paths  # predictor id -> path in the outermost program (shared down the chain)
        self.steps: list[TraceStep] = []

    def add(self, step: TraceStep) -> None:
        node: _TraceCollector | None = self
        while node is not None:
            node.steps.append(step)
            node = node.parent


_collector: contextvars.ContextVar[_TraceCollector | None] = contextvars.ContextVar(
    "dspex_trace_collector", default=None
)


def record_trace_step(predictor: Predictor, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    """Append a predictor call to the trace of every module call in progress here.

    Predictors call this once per call; a path is the predictor's attribute path in the outermost
    program being called (``"self"`` for a bare predictor).
    """
    collector = _collector.get()
    if collector is None:
        return  # not inside Module.acall: nobody is tracing
    path = collector.paths.get(id(predictor), UNATTACHED_PATH)
    collector.add(TraceStep(path, predictor, dict(inputs), dict(outputs)))


@contextmanager
def detached_trace() -> Iterator[None]:
    """Within the block, a module call starts a trace of its own instead of joining the enclosing one.

    For modules that run attempts and keep one (BestOfN): the attempt's ``pred.trace`` is its own, and
    the caller re-records the steps it keeps with :func:`record_trace_step`. Usage still counts.
    """
    token = _collector.set(None)
    try:
        yield
    finally:
        _collector.reset(token)


class Module:
    """The base of every program: subclass it and define ``aforward`` (preferred) or ``forward``.

    >>> class TwoStep(dspex.Module):
    ...     def __init__(self):
    ...         self.draft = dspex.ChainOfThought("question -> answer")
    ...         self.check = dspex.Predict("question, answer -> answer")
    ...     async def aforward(self, question):
    ...         draft = await self.draft.acall(question=question)
    ...         return await self.check.acall(question=question, answer=draft.answer)

    Sub-modules are found through attributes, lists and dicts (``steps[0]``, ``tools['search']``).
    """

    # Set by predictors (Predict): leaves of the module tree that hold a signature, demos and an LM.
    is_predictor: ClassVar[bool] = False
    # The short type name a built-in writes into program JSON instead of its import path.
    program_alias: ClassVar[str | None] = None
    # DSPy's flags, as class defaults so that subclasses that never call super().__init__() have them:
    # an optimizer marks what it returns compiled; callbacks given to this module only.
    _compiled: bool = False
    callbacks: Sequence[Any] = ()

    def __init__(self, callbacks: Sequence[Any] | None = None) -> None:
        self.callbacks = list(callbacks or [])
        self._compiled = False

    @property
    def history(self) -> list[dict[str, Any]]:
        """The LM calls made inside this module's calls (DSPy's per-module history), newest last;
        at most ``dspex.settings.max_history_size``, none with ``disable_history=True``."""
        history: list[dict[str, Any]] = self.__dict__.setdefault("history", [])
        return history

    @history.setter
    def history(self, value: list[dict[str, Any]]) -> None:
        self.__dict__["history"] = value

    # -- calling ------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        """Call from sync code: ``module(question=...)``. Inside async code use :meth:`acall`."""
        return run_sync(self.acall(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        """Call the module; the result carries the trace and usage of everything it ran."""
        parent = _collector.get()
        paths = parent.paths if parent else self._predictor_paths()
        collector = _TraceCollector(parent, paths)
        token = _collector.set(collector)
        callers_token = CALLER_MODULES.set((*CALLER_MODULES.get(), self))
        callbacks = listening(active_callbacks(self), "module")
        call_id = notify_start(callbacks, "module", self, dict(kwargs)) if callbacks else ""
        # the calls made inside (sub-modules, LMs) see this call as their parent (DSPy's ACTIVE_CALL_ID)
        call_token = ACTIVE_CALL_ID.set(call_id) if callbacks else None
        tracker, lm_usage = call_usage_tracker()
        try:
            with track_usage(tracker):
                result = await self._dispatch(args, kwargs)
        except BaseException as exc:
            if callbacks:
                notify_end(callbacks, "module", call_id, None, exc)
            raise
        finally:
            _collector.reset(token)
            CALLER_MODULES.reset(callers_token)
            if call_token is not None:
                ACTIVE_CALL_ID.reset(call_token)
        if callbacks:
            notify_end(callbacks, "module", call_id, result, None)
        if isinstance(result, Prediction):
            result._trace = list(collector.steps)
            result._usage = tracker.usage
            if lm_usage:
                result.set_lm_usage(tracker.get_total_tokens())
        return cast(Prediction, result)

    async def _dispatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        entry = _entry_point(type(self))
        if entry == "aforward":
            return await self.aforward(*args, **kwargs)
        if entry == "forward":
            # A sync forward blocks: run it in a worker thread whose sync sub-module calls come back
            # to this loop (see dspex._sync), so the event loop keeps serving other calls.
            return await run_in_thread(self.forward, *args, **kwargs)
        raise ConfigurationError(f"{type(self).__qualname__} defines neither `aforward` nor `forward`")

    async def aforward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Override with the program's async logic (preferred over :meth:`forward`)."""
        raise ConfigurationError(f"{type(self).__qualname__} does not define `aforward`")

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Override with the program's sync logic; it runs in a worker thread under :meth:`acall`."""
        raise ConfigurationError(f"{type(self).__qualname__} does not define `forward`")

    @overload
    def batch(
        self, examples: Sequence[Example | Mapping[str, Any]], *, concurrency: int | None = None,
        num_threads: int | None = None, max_errors: int | None = None,
        return_failed_examples: Literal[False] = False, provide_traceback: bool | None = None,
        disable_progress_bar: bool = False, timeout: int = 120, straggler_limit: int = 3,
    ) -> list[Prediction | None]: ...  # fmt: skip
    @overload
    def batch(
        self, examples: Sequence[Example | Mapping[str, Any]], *, concurrency: int | None = None,
        num_threads: int | None = None, max_errors: int | None = None,
        return_failed_examples: Literal[True], provide_traceback: bool | None = None,
        disable_progress_bar: bool = False, timeout: int = 120, straggler_limit: int = 3,
    ) -> BatchWithFailures: ...  # fmt: skip
    @overload
    def batch(
        self, examples: Sequence[Example | Mapping[str, Any]], *, concurrency: int | None = None,
        num_threads: int | None = None, max_errors: int | None = None,
        return_failed_examples: bool, provide_traceback: bool | None = None,
        disable_progress_bar: bool = False, timeout: int = 120, straggler_limit: int = 3,
    ) -> list[Prediction | None] | BatchWithFailures: ...  # fmt: skip
    def batch(
        self,
        examples: Sequence[Example | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: int = 120,
        straggler_limit: int = 3,
    ) -> list[Prediction | None] | BatchWithFailures:
        """Call the module on many examples at once, at most ``concurrency`` in flight (sync form).

        ``provide_traceback``, ``disable_progress_bar``, ``timeout`` and ``straggler_limit`` are DSPy's
        thread-pool options, accepted for its callers; calls here are tasks with LM-level timeouts.

        ``num_threads`` is DSPy's name for ``concurrency``. Results are in example order (None for a
        failed one); ``return_failed_examples=True`` gives ``(results, failed_examples, exceptions)``.
        ``max_errors``: raise once more than that many examples failed (None: no limit).
        """
        return run_sync(
            self.abatch(
                examples,
                concurrency=concurrency,
                num_threads=num_threads,
                max_errors=max_errors,
                return_failed_examples=return_failed_examples,
            )
        )

    @overload
    async def abatch(
        self, examples: Sequence[Example | Mapping[str, Any]], *, concurrency: int | None = None,
        num_threads: int | None = None, max_errors: int | None = None,
        return_failed_examples: Literal[False] = False,
    ) -> list[Prediction | None]: ...  # fmt: skip
    @overload
    async def abatch(
        self, examples: Sequence[Example | Mapping[str, Any]], *, concurrency: int | None = None,
        num_threads: int | None = None, max_errors: int | None = None, return_failed_examples: Literal[True],
    ) -> BatchWithFailures: ...  # fmt: skip
    @overload
    async def abatch(
        self, examples: Sequence[Example | Mapping[str, Any]], *, concurrency: int | None = None,
        num_threads: int | None = None, max_errors: int | None = None, return_failed_examples: bool,
    ) -> list[Prediction | None] | BatchWithFailures: ...  # fmt: skip
    async def abatch(
        self,
        examples: Sequence[Example | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
    ) -> list[Prediction | None] | BatchWithFailures:
        """:meth:`batch` for async code: ``preds = await program.abatch(devset, concurrency=32)``."""
        bound = resolve_concurrency(concurrency, num_threads)
        calls = [functools.partial(self.acall, **call_inputs(ex, i)) for i, ex in enumerate(examples)]
        outcome = await run_bounded(calls, concurrency=bound, max_errors=max_errors)
        return outcome.packaged(examples, return_failed_examples)

    # -- structure ----------------------------------------------------------------------------

    def named_children(self) -> list[tuple[str, Module]]:
        """Direct sub-modules by attribute path segment: ``gen``, ``steps[0]``, ``tools['k']``."""
        if self.is_predictor:
            return []
        children: list[tuple[str, Module]] = []
        for name, value in vars(self).items():
            if name == "history":
                continue  # LM calls, up to max_history_size of them: never modules, and walked per call
            if isinstance(value, Module):
                children.append((name, value))
            elif isinstance(value, list | tuple):
                children += [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, Module)]
            elif isinstance(value, dict):
                children += [(f"{name}[{k!r}]", v) for k, v in value.items() if isinstance(v, Module)]
        return children

    def module_tree(self) -> list[tuple[str, Module]]:
        """This module (``"self"``) and every module below it, each once, depth first, by the paths
        :meth:`named_predictors` uses (``"generate"``, ``"steps[0]"``)."""
        # An explicit stack rather than a recursive closure: a nested function that calls itself
        # is a reference cycle, left for the garbage collector on every call (and every acall).
        found: list[tuple[str, Module]] = []
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [("self", self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            found.append((path, module))
            children = module.named_children()
            stack += [(_child_path(path, segment), child) for segment, child in reversed(children)]
        return found

    def named_sub_modules(
        self, type_: type | None = None, skip_compiled: bool = False
    ) -> Iterator[tuple[str, Any]]:
        """DSPy's walk: every object of ``type_`` (default Module) reachable through attributes, lists,
        tuples and dicts, breadth first, each once, named ``self.sub.items[0][key]``."""
        wanted = type_ or Module
        queue: deque[tuple[str, Any]] = deque([("self", self)])
        seen = {id(self)}
        while queue:
            name, item = queue.popleft()
            if isinstance(item, wanted):
                yield name, item
            for child_name, child in _dspy_children(name, item, skip_compiled):
                if id(child) not in seen:
                    seen.add(id(child))
                    queue.append((child_name, child))

    def named_parameters(self) -> list[tuple[str, Predictor]]:
        """DSPy's name for :meth:`named_predictors` (predictors are a program's parameters)."""
        return self.named_predictors()

    def parameters(self) -> list[Predictor]:
        """DSPy's name for :meth:`predictors`."""
        return self.predictors()

    def map_named_predictors(self, func: Callable[[Predictor], Predictor]) -> Self:
        """Replace every predictor with ``func(predictor)``, in place; returns this module."""
        for name, predictor in self.named_predictors():
            set_attribute_by_name(self, name, func(predictor))
        return self

    def named_predictors(self) -> list[tuple[str, Predictor]]:
        """Every predictor with its attribute path (``"generate.predict"``; ``"self"`` for a Predict)."""
        return [(path, cast(Predictor, m)) for path, m in self.module_tree() if m.is_predictor]

    def predictors(self) -> list[Predictor]:
        """Every predictor, in :meth:`named_predictors` order."""
        return [predictor for _, predictor in self.named_predictors()]

    def _predictor_paths(self) -> dict[int, str]:
        return {id(predictor): path for path, predictor in self.named_predictors()}

    # -- copies and LMs -----------------------------------------------------------------------

    def deepcopy(self) -> Self:
        """An independent copy (signatures, demos, config); LMs and adapters stay shared."""
        memo: dict[int, Any] = {}
        for _, module in self.module_tree():
            for value in vars(module).values():
                if isinstance(value, BaseLM | Adapter):
                    memo[id(value)] = value
        copy: Self = _copy_module(self, memo)
        return copy

    def reset_copy(self) -> Self:
        """A :meth:`deepcopy` with every predictor's demos cleared."""
        copied = self.deepcopy()
        for predictor in copied.predictors():
            predictor.demos = []
        return copied

    def set_lm(self, lm: BaseLM | None) -> None:
        """Give every predictor this LM (None: fall back to ``dspex.context``/``configure``)."""
        for predictor in self.predictors():
            predictor.lm = lm

    def get_lm(self) -> BaseLM | None:
        """The LM all predictors carry (None if none does); an error if they carry different ones."""
        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) > 1:
            raise ConfigurationError(
                f"the predictors of {type(self).__qualname__} carry {len(lms)} different LMs; "
                "read them from each predictor (module.named_predictors())"
            )
        return next(iter(lms.values()), None)

    # -- state and saving ---------------------------------------------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """DSPy's state: each predictor's :meth:`~dspex.Predict.dump_state` by its ``named_parameters``
        name (``"generate.predict"``). ``json_mode=False`` keeps demo values JSON cannot hold."""
        return _dspy_state.dump_module_state(self, json_mode=json_mode)

    def load_state(self, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False) -> Self:
        """Lay a :meth:`dump_state` result (from dspex or DSPy) over this module's predictors, by
        name; all are checked before any changes. ``allow_unsafe_lm_state``: keep the LM states'
        ``api_base``/``base_url``/``model_list`` and allow custom LM classes (trusted files only)."""
        _dspy_state.load_module_state(self, state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        return self

    def dump(self) -> dict[str, Any]:
        """This program as self-describing JSON data (see :mod:`dspex.serialization`)."""
        return serialization.dump_program(self)

    def save(
        self, path: str | Path, save_program: bool = False, modules_to_serialize: Sequence[Any] | None = None
    ) -> None:
        """Save as DSPy does: ``"p.json"`` (DSPy's state JSON, which DSPy loads too, plus this program's
        self-describing JSON, so ``dspex.load(path)`` rebuilds it), ``"p.pkl"``, or with
        ``save_program=True`` a directory (see :func:`dspex.primitives.saving.save`)."""
        saving.save(self, path, save_program=save_program, modules_to_serialize=modules_to_serialize)

    def load(
        self,
        path: str | Path,
        allow_pickle: bool = False,
        allow_unsafe_lm_state: bool = False,
        *,
        allow_modules: Collection[str] | None = None,
    ) -> Self:
        """Load a saved program's state (from dspex or DSPy) into this instance; returns it.

        ``allow_pickle``: read ``.pkl`` files and ``save_program`` directories (restricted
        unpickler). ``allow_unsafe_lm_state``: keep saved LM endpoints (trusted files only).
        """
        saving.load_into(
            self,
            path,
            allow_modules=allow_modules,
            allow_pickle=allow_pickle,
            allow_unsafe_lm_state=allow_unsafe_lm_state,
        )
        return self

    @classmethod
    def program_type(cls) -> str:
        """The type this class is saved as: its alias, else ``"package.module:QualName"``."""
        alias = cls.__dict__.get("program_alias")
        return alias if isinstance(alias, str) else f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """A fresh instance to overlay a saved ``node`` onto. Custom modules are built with no arguments.

        ``allow_modules`` is the load's import policy, for classes that import what the node names.
        """
        try:
            inspect.signature(cls).bind()
        except TypeError as exc:
            raise ProgramLoadError(
                f"{cls.__qualname__} needs constructor arguments ({exc}), so a saved program cannot build "
                f"it alone; give them defaults, or build it yourself and overlay the saved program: "
                f"{cls.__qualname__}(...).load(path)"
            ) from exc
        return cls()

    def __repr__(self) -> str:
        paths = ", ".join(path for path, _ in self.named_predictors())
        return f"{type(self).__qualname__}(predictors: {paths})"


class Predictor(Module):
    """A leaf of the module tree: a signature, demos and an LM (:class:`dspex.Predict` is the one built in).

    The program tree, its traces and its saved files are typed against this interface, so that this
    layer never imports the predictors built on it (they import it).
    """

    is_predictor: ClassVar[bool] = True

    signature: type[Signature]
    demos: list[Any]
    lm: Any  # a BaseLM or None (DSPy lets code set anything; calls check it)
    config: dict[str, Any]
    adapter: Adapter | None
    traces: list[Any]
    train: list[Any]

    @abstractmethod
    def reset(self) -> None:
        """Forget what was learned or set: the LM, the demos, DSPy's ``traces`` and ``train``."""

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The request options every call sends."""

    @abstractmethod
    def update_config(self, **kwargs: Any) -> None:
        """Add or change request options."""

    @abstractmethod
    def predictor_state(self) -> dict[str, Any]:
        """This predictor's part of a saved program (see :mod:`dspex.serialization`)."""

    @abstractmethod
    def load_predictor_state(
        self,
        state: Mapping[str, Any],
        *,
        lm_pool: dict[str, Any] | None = None,
        allow_modules: Collection[str] | None = None,
    ) -> None:
        """Overlay a :meth:`predictor_state` result."""


def _copy_module(module: Module, memo: dict[int, Any]) -> Any:
    if id(module) in memo:
        return memo[id(module)]
    new = object.__new__(type(module))
    memo[id(module)] = new
    for name, value in vars(module).items():
        object.__setattr__(new, name, _copy_value(value, memo, f"{type(module).__qualname__}.{name}"))
    return new


def _copy_value(value: Any, memo: dict[int, Any], where: str) -> Any:
    if isinstance(value, Module):
        return _copy_module(value, memo)
    if type(value) is list:
        return [_copy_value(item, memo, where) for item in value]
    if type(value) is tuple:
        return tuple(_copy_value(item, memo, where) for item in value)
    if type(value) is dict:
        return {key: _copy_value(item, memo, where) for key, item in value.items()}
    try:
        return copy.deepcopy(value, memo)
    except (TypeError, copy.Error) as exc:
        # Clients, locks and sockets cannot be copied; sharing them is what a copy of a program wants.
        logger.debug("sharing %s between copies (it cannot be deep-copied: %s)", where, exc)
        return value


_ENTRY_POINTS: dict[type, str | None] = {}


def _entry_point(cls: type) -> str | None:
    """Which of ``aforward``/``forward`` a call runs: the one defined closest to ``cls`` in its MRO
    (``aforward`` when one class defines both), so a subclass of Predict that overrides only
    ``forward`` is called through it. Decided once per class."""
    if cls not in _ENTRY_POINTS:
        chosen = None
        for klass in cls.__mro__:
            if klass is Module:
                break
            if "aforward" in klass.__dict__ or "forward" in klass.__dict__:
                chosen = "aforward" if "aforward" in klass.__dict__ else "forward"
                break
        _ENTRY_POINTS[cls] = chosen
    return _ENTRY_POINTS[cls]


def _dspy_children(name: str, item: Any, skip_compiled: bool) -> list[tuple[str, Any]]:
    if isinstance(item, Module):
        if skip_compiled and getattr(item, "_compiled", False):
            return []
        return [(f"{name}.{key}", value) for key, value in vars(item).items()]
    if isinstance(item, list | tuple):
        return [(f"{name}[{i}]", value) for i, value in enumerate(item)]
    if isinstance(item, dict):
        return [(f"{name}[{key}]", value) for key, value in item.items()]
    return []


_PATH_PART = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]|\[(['\"])(.*?)\3\]")


def set_attribute_by_name(obj: Any, name: str, value: Any) -> None:
    """Set what ``name`` (a path such as ``sub.items[0]['key'].predict``) points to below ``obj``."""
    parts = [(m.group(1), m.group(2), m.group(4)) for m in _PATH_PART.finditer(name)]
    if not parts:
        raise ConfigurationError(f"cannot set {name!r}: not an attribute path")
    target = obj
    for attr, index, key in parts[:-1]:
        target = getattr(target, attr) if attr else target[int(index)] if index else target[key]
    attr, index, key = parts[-1]
    if attr:
        setattr(target, attr, value)
    elif index:
        target[int(index)] = value
    else:
        target[key] = value


def _child_path(parent: str, segment: str) -> str:
    return segment if parent == "self" else f"{parent}.{segment}"

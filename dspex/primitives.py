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
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from pydantic import BaseModel

from dspex import serialization
from dspex._parallel import call_inputs, resolve_concurrency, run_bounded
from dspex._sync import run_in_thread, run_sync
from dspex.adapters import Adapter
from dspex.errors import ConfigurationError, InputError, ProgramLoadError
from dspex.lm import LM
from dspex.lm.usage import Usage, track_usage

if TYPE_CHECKING:
    from dspex.modules.predict import Predict

__all__ = ["Example", "Module", "Prediction", "TraceStep", "detached_trace", "record_trace_step"]

logger = logging.getLogger(__name__)

UNATTACHED_PATH = "<unattached>"


class Example:
    """One record of named fields, some of them marked as inputs (DSPy's ``Example``).

    >>> ex = Example(question="What is 2 + 3?", answer="5").with_inputs("question")
    >>> ex.question, ex["answer"], ex.inputs().to_dict(), ex.labels().to_dict()
    ('What is 2 + 3?', '5', {'question': 'What is 2 + 3?'}, {'answer': '5'})

    Fields are read as attributes or items; two examples are equal when their fields are.
    """

    _store: dict[str, Any]
    _input_keys: frozenset[str] | None

    def __init__(self, base: Example | Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        store = dict(base._store if isinstance(base, Example) else (base or {}))
        store.update(fields)
        object.__setattr__(self, "_store", store)
        input_keys = base._input_keys if isinstance(base, Example) else None
        object.__setattr__(self, "_input_keys", input_keys)

    # -- field access -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Private and dunder names are never fields, which also
        # keeps copy/pickle from recursing before `_store` exists.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._store[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        elif hasattr(type(self), name):
            # Shadowing a method (ex.keys = ...) would break the object; a field of that name is fine.
            raise AttributeError(
                f"{name!r} is a {type(self).__name__} attribute; set the field as ex[{name!r}]"
            )
        else:
            self._store[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._store))

    def __len__(self) -> int:
        return len(self._store)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    __hash__ = None  # type: ignore[assignment]  # mutable, equal by content: not hashable

    def __repr__(self) -> str:
        inputs = "" if self._input_keys is None else f", input_keys={sorted(self._input_keys)}"
        return f"{type(self).__name__}({self._store!r}{inputs})"

    def keys(self) -> list[str]:
        """The field names, in insertion order."""
        return list(self._store)

    def values(self) -> list[Any]:
        """The field values, in insertion order."""
        return list(self._store.values())

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, in insertion order."""
        return list(self._store.items())

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field ``key``, or ``default``."""
        return self._store.get(key, default)

    # -- inputs and labels --------------------------------------------------------------------

    @property
    def input_keys(self) -> frozenset[str] | None:
        """The names marked as inputs by :meth:`with_inputs`, or None if never marked."""
        return self._input_keys

    def with_inputs(self, *names: str) -> Self:
        """A copy with ``names`` marked as the inputs; the other fields are labels."""
        copied = self.copy()
        object.__setattr__(copied, "_input_keys", frozenset(names))
        return copied

    def inputs(self) -> Self:
        """A copy holding only the input fields."""
        keys = self._marked_inputs()
        return self._subset(lambda name: name in keys)

    def labels(self) -> Self:
        """A copy holding only the fields that are not inputs."""
        keys = self._marked_inputs()
        return self._subset(lambda name: name not in keys)

    def _marked_inputs(self) -> frozenset[str]:
        if self._input_keys is None:
            raise InputError(
                f"no input fields are marked on {self!r}; call example.with_inputs('question', ...) first"
            )
        return self._input_keys

    def _subset(self, keep: Any) -> Self:
        subset = type(self)({name: value for name, value in self._store.items() if keep(name)})
        object.__setattr__(subset, "_input_keys", self._input_keys)
        return subset

    # -- copies -------------------------------------------------------------------------------

    def copy(self, **changes: Any) -> Self:
        """A shallow copy, with ``changes`` applied to its fields."""
        return type(self)(self, **changes)

    def without(self, *names: str) -> Self:
        """A copy without the fields ``names`` (KeyError for a field it does not have)."""
        copied = self.copy()
        for name in names:
            del copied[name]
        return copied

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, nested examples and pydantic models converted too."""
        return {name: _plain(value) for name, value in self._store.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Example):
        return value.to_dict()
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class Prediction(Example):
    """What a module returns: its output fields, plus the trace and usage of the call.

    >>> pred = await qa.acall(question="What is 2 + 3?")
    >>> pred.answer, pred.reasoning, pred.usage.total_tokens, [s.predictor_path for s in pred.trace]
    """

    _usage: Usage
    _trace: list[TraceStep]
    _adapter: str | None

    def __init__(self, base: Example | Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        super().__init__(base, **fields)
        known = base if isinstance(base, Prediction) else None
        self._usage = known.usage if known else Usage()
        self._trace = list(known.trace) if known else []
        self._adapter = known.adapter if known else None

    @property
    def usage(self) -> Usage:
        """Tokens, cost and LM calls of the call that produced this prediction."""
        return self._usage

    @property
    def trace(self) -> list[TraceStep]:
        """The predictor calls made by the call that produced this prediction, in order."""
        return self._trace

    @property
    def adapter(self) -> str | None:
        """The adapter that parsed the LM output ("chat" or "json"), for a predictor's output."""
        return self._adapter

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._store.items())
        return f"Prediction({fields})"


@dataclass(frozen=True)
class TraceStep:
    """One predictor call: where the predictor sits in the program, and what went in and out."""

    predictor_path: str
    predictor: Predict
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


def record_trace_step(predictor: Predict, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
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
        try:
            with track_usage() as tracker:
                result = await self._dispatch(args, kwargs)
        finally:
            _collector.reset(token)
        if isinstance(result, Prediction):
            result._trace = list(collector.steps)
            result._usage = tracker.usage
        return cast(Prediction, result)

    async def _dispatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cls = type(self)
        if cls.aforward is not Module.aforward:
            return await self.aforward(*args, **kwargs)
        if cls.forward is not Module.forward:
            # A sync forward blocks: run it in a worker thread whose sync sub-module calls come back
            # to this loop (see dspex._sync), so the event loop keeps serving other calls.
            return await run_in_thread(self.forward, *args, **kwargs)
        raise ConfigurationError(f"{cls.__qualname__} defines neither `aforward` nor `forward`")

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        """Override with the program's async logic (preferred over :meth:`forward`)."""
        raise ConfigurationError(f"{type(self).__qualname__} does not define `aforward`")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Override with the program's sync logic; it runs in a worker thread under :meth:`acall`."""
        raise ConfigurationError(f"{type(self).__qualname__} does not define `forward`")

    def batch(
        self,
        examples: Sequence[Example | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
    ) -> Any:
        """Call the module on many examples at once, at most ``concurrency`` in flight (sync form).

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

    async def abatch(
        self,
        examples: Sequence[Example | Mapping[str, Any]],
        *,
        concurrency: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
    ) -> Any:
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
            if isinstance(value, Module):
                children.append((name, value))
            elif isinstance(value, list | tuple):
                children += [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, Module)]
            elif isinstance(value, dict):
                children += [(f"{name}[{k!r}]", v) for k, v in value.items() if isinstance(v, Module)]
        return children

    def named_sub_modules(self) -> list[tuple[str, Module]]:
        """This module (``"self"``) and every module below it, each once, depth first."""
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

    def named_predictors(self) -> list[tuple[str, Predict]]:
        """Every predictor with its attribute path (``"generate.predict"``; ``"self"`` for a Predict)."""
        return [(path, cast("Predict", m)) for path, m in self.named_sub_modules() if m.is_predictor]

    def predictors(self) -> list[Predict]:
        """Every predictor, in :meth:`named_predictors` order."""
        return [predictor for _, predictor in self.named_predictors()]

    def _predictor_paths(self) -> dict[int, str]:
        return {id(predictor): path for path, predictor in self.named_predictors()}

    # -- copies and LMs -----------------------------------------------------------------------

    def deepcopy(self) -> Self:
        """An independent copy (signatures, demos, config); LMs and adapters stay shared."""
        memo: dict[int, Any] = {}
        for _, module in self.named_sub_modules():
            for value in vars(module).values():
                if isinstance(value, LM | Adapter):
                    memo[id(value)] = value
        return _copy_module(self, memo)

    def reset_copy(self) -> Self:
        """A :meth:`deepcopy` with every predictor's demos cleared."""
        copied = self.deepcopy()
        for predictor in copied.predictors():
            predictor.demos = []
        return copied

    def set_lm(self, lm: LM | None) -> None:
        """Give every predictor this LM (None: fall back to ``dspex.context``/``configure``)."""
        for predictor in self.predictors():
            predictor.lm = lm

    def get_lm(self) -> LM | None:
        """The LM all predictors carry (None if none does); an error if they carry different ones."""
        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) > 1:
            raise ConfigurationError(
                f"the predictors of {type(self).__qualname__} carry {len(lms)} different LMs; "
                "read them from each predictor (module.named_predictors())"
            )
        return next(iter(lms.values()), None)

    # -- state and saving ---------------------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        """Each predictor's state (signature, demos, LM settings, config) by attribute path."""
        return {path: predictor.predictor_state() for path, predictor in self.named_predictors()}

    def load_state(self, state: Mapping[str, Any]) -> Self:
        """Overlay a :meth:`dump_state` result onto this module's predictors, by path."""
        predictors = dict(self.named_predictors())
        unknown = sorted(set(state) - set(predictors))
        if unknown:
            raise ProgramLoadError(
                f"the state names predictors {type(self).__qualname__} does not have: {unknown}; "
                f"it has: {sorted(predictors)}"
            )
        for path, predictor_state in state.items():
            predictors[path].load_predictor_state(predictor_state)
        return self

    def dump(self) -> dict[str, Any]:
        """This program as self-describing JSON data (see :mod:`dspex.serialization`)."""
        return serialization.dump_program(self)

    def save(self, path: str | Path) -> None:
        """Write this program to a JSON file that ``dspex.load(path)`` rebuilds."""
        serialization.save_program(self, path)

    def load(self, path: str | Path) -> Self:
        """Overlay a saved program's state onto this instance (for modules built with arguments)."""
        serialization.load_into(self, path)
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


def _child_path(parent: str, segment: str) -> str:
    return segment if parent == "self" else f"{parent}.{segment}"

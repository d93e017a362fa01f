"""``KNNFewShot``: at call time, the training examples nearest to the inputs become the demos.

    knn = KNNFewShot(4, trainset, lm=embedding_lm)           # embeddings through the LM client
    program = knn.compile(dspex.Predict("question -> answer"))
    program(question="What is 3 + 4?")

As in DSPy: the trainset is embedded once (each example as ``"key: value | ..."`` over its inputs);
each call embeds its inputs, takes the ``k`` examples with the highest dot product, runs
:class:`BootstrapFewShot` on them (its knobs passed through, e.g. ``metric=...``,
``max_bootstrapped_demos=...``) and calls the program so compiled. The teacher runs of that bootstrap
are not part of the call's trace; its usage is.

``vectorizer`` (DSPy's name) may replace the LM: a callable, sync or async, from a list of texts to a
list of vectors. Without either, the LM of ``dspex.context`` / ``dspex.configure`` embeds.

A compiled program saves as JSON (the trainset with its vectors, the bootstrap knobs, the teacher;
a vectorizer or a custom metric by import path), so cluster workers rebuild and run it; one built
with ``lm=`` cannot be saved (workers embed with the job's LM).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic_core import to_jsonable_python

from dspex._sync import run_sync
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.lm import LM
from dspex.lm.embedder import Embedder
from dspex.metrics import resolve_metric
from dspex.optimizers._base import Optimizer, check_examples, check_int, check_labels
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.executor import Executor, LocalExecutor
from dspex.optimizers.history import Trial, TrialHistory
from dspex.primitives import Example, Module, Prediction, detached_trace, record_trace_step
from dspex.primitives.saving import load_program
from dspex.serialization import dump_program, import_object, import_path_of

__all__ = ["KNN", "KNNFewShot", "KNNFewShotProgram"]

Vectorizer = Callable[[Sequence[str]], Any]


def _text(items: Sequence[tuple[str, Any]]) -> str:
    return " | ".join(f"{key}: {value}" for key, value in items)


class KNN:
    """The ``k`` training examples nearest to some inputs (DSPy's ``dspy.KNN``), embeddings cached.

    ``KNN(k, trainset, vectorizer)`` as in DSPy: ``vectorizer`` is a :class:`dspex.Embedder` or a
    callable from texts to vectors; one that runs without an event loop (a plain function, an
    Embedder over one) embeds the trainset here, as DSPy does, and ``knn(**inputs)`` is then a plain
    call. Without a vectorizer, ``lm`` (else the configured LM) embeds through ``/embeddings``, at the
    first call. ``trainset_vectors`` is a numpy array when numpy is installed.
    """

    def __init__(
        self,
        k: int,
        trainset: Sequence[Example],
        vectorizer: Vectorizer | None = None,
        *,
        lm: LM | None = None,
        embed_model: str | None = None,
    ) -> None:
        self.k = check_int("k", k, minimum=1)
        self.trainset = check_examples("trainset", trainset)
        if self.k > len(self.trainset):
            raise ConfigurationError(f"k={k} neighbours asked of a trainset of {len(self.trainset)} examples")
        if lm is not None and not isinstance(lm, LM):
            raise ConfigurationError(f"lm must be a dspex.LM, got {type(lm).__name__}")
        if vectorizer is not None and not callable(vectorizer):
            raise ConfigurationError(
                "vectorizer must be a dspex.Embedder or a callable from a list of texts to a list of vectors"
            )
        self.lm, self.vectorizer, self.embed_model = lm, vectorizer, embed_model
        self._vectors: list[list[float]] | None = None
        self._lock = asyncio.Lock()
        if _runs_without_loop(vectorizer):
            self._vectors = self._embed_now(self._trainset_texts())

    @property
    def embedding(self) -> Vectorizer | None:
        """DSPy's name for the vectorizer."""
        return self.vectorizer

    @property
    def trainset_vectors(self) -> Any:
        """The trainset's vectors (numpy float32 when numpy is installed; None before embedding)."""
        if self._vectors is None:
            return None
        try:
            import numpy as np
        except ImportError:  # numpy is optional for dspex
            return self._vectors
        return np.asarray(self._vectors, dtype=np.float32)

    def _trainset_texts(self) -> list[str]:
        return [_text([(k, v) for k, v in ex.items() if k in (ex.input_keys or ())]) for ex in self.trainset]

    def _embed_now(self, texts: Sequence[str]) -> list[list[float]]:
        assert self.vectorizer is not None  # only called for a vectorizer that runs without a loop
        return [list(map(float, v)) for v in self.vectorizer(list(texts))]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of ``texts`` from the vectorizer, else the LM's ``aembed``."""
        vectorizer = self.vectorizer
        if vectorizer is not None:
            call = vectorizer.acall if isinstance(vectorizer, Embedder) else vectorizer
            value = call(list(texts))
            return [list(map(float, v)) for v in (await value if inspect.isawaitable(value) else value)]
        lm = self.lm or current_settings().lm
        if lm is None:
            raise ConfigurationError(
                "KNN has nothing to embed with: pass vectorizer= or lm=, or configure an LM"
            )
        if not isinstance(lm, LM):
            raise ConfigurationError(
                f"KNN embeds with a dspex.LM (its /embeddings endpoint), not a {type(lm).__name__}: "
                "pass vectorizer=dspex.Embedder(...)"
            )
        return await lm.aembed(list(texts), model=self.embed_model)

    async def prepare(self) -> None:
        """Embed the trainset (once)."""
        if self._vectors is not None:
            return
        async with self._lock:
            if self._vectors is None:
                self._vectors = await self.embed(self._trainset_texts())

    async def acall(self, **inputs: Any) -> list[Example]:
        """The ``k`` nearest examples, nearest first (ties: trainset order)."""
        await self.prepare()
        [query] = await self.embed([_text(list(inputs.items()))])
        return self._nearest(query)

    def __call__(self, **inputs: Any) -> list[Example]:
        """Sync :meth:`acall` (a plain call when the vectorizer runs without an event loop)."""
        if self._vectors is not None and _runs_without_loop(self.vectorizer):
            [query] = self._embed_now([_text(list(inputs.items()))])
            return self._nearest(query)
        return run_sync(self.acall(**inputs))

    def _nearest(self, query: Sequence[float]) -> list[Example]:
        vectors = self._vectors or []
        scores = [math.fsum(a * b for a, b in zip(vector, query, strict=False)) for vector in vectors]
        nearest = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: self.k]
        return [self.trainset[i] for i in nearest]

    def __deepcopy__(self, memo: dict[int, Any]) -> KNN:
        return self  # the trainset and its vectors are read-only: copies of a program share them


def _runs_without_loop(vectorizer: Any) -> bool:
    """A vectorizer that is a plain function (or an Embedder over one): callable from sync code."""
    if vectorizer is None:
        return False
    if isinstance(vectorizer, Embedder):
        model = vectorizer.model
        return callable(model) and not isinstance(model, LM) and not _is_async(model)
    return not _is_async(vectorizer)


def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004  # an object whose __call__ is async
    )


@dataclass
class _Setup:
    """What a KNN program needs besides its student (kept out of its module tree)."""

    knn: KNN
    bootstrap: BootstrapFewShot
    teacher: Module | None
    concurrency: int
    bootstrap_args: dict[str, Any] = field(default_factory=dict)  # as given, for saving


class KNNFewShotProgram(Module):
    """The program :meth:`KNNFewShot.compile` returns: the student, with demos chosen per call."""

    def __init__(self, program: Module, setup: _Setup) -> None:
        self.program = program
        self._setup = setup

    async def aforward(self, **inputs: Any) -> Prediction:
        setup = self._setup
        neighbours = await setup.knn.acall(**inputs)
        with detached_trace():
            executor = LocalExecutor(setup.concurrency)
            run = setup.bootstrap.unchecked_run(self.program, neighbours, setup.teacher, None, executor)
            compiled = await run.run_to_end()
            prediction = await compiled.acall(**inputs)
        # The call's trace names this program's predictors (the compiled copy has the same paths).
        mine = dict(self.program.named_predictors())
        for step in prediction.trace:
            if step.predictor_path in mine:
                record_trace_step(mine[step.predictor_path], step.inputs, step.outputs)
        return prediction

    # -- saving: the student is its child; the KNN and the bootstrap knobs its state, so that a
    # worker rebuilds the same program (the trainset's vectors included: no re-embedding there).

    def program_state(self) -> dict[str, Any]:
        """k, the trainset and its vectors, the embedding settings, the bootstrap knobs and teacher."""
        setup, knn = self._setup, self._setup.knn
        if knn.lm is not None:
            raise ConfigurationError(
                "a KNNFewShot program built with lm= cannot be saved (an LM object is not JSON and a "
                "worker uses its own LMs); leave lm= out so it embeds with the configured LM"
            )
        return {
            "k": knn.k,
            "trainset": [_example_state(example) for example in knn.trainset],
            "vectors": knn._vectors,
            "embed_model": knn.embed_model,
            **_vectorizer_state(knn.vectorizer),
            "bootstrap": _bootstrap_state(setup.bootstrap, setup.bootstrap_args),
            "teacher": None if setup.teacher is None else dump_program(setup.teacher),
            "concurrency": setup.concurrency,
        }

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Built from the saved state; the loader then builds the ``program`` child and sets it."""
        state, children = node.get("state"), node.get("children")
        if not isinstance(state, Mapping) or not isinstance(children, Mapping) or "program" not in children:
            raise ProgramLoadError(f"a saved {cls.__name__} needs its 'state' and its 'program' child")
        vectorizer = _vectorizer_of(state, allow_modules)
        trainset = [_example_of(item) for item in state["trainset"]]
        knn = KNN(state["k"], trainset, vectorizer=vectorizer, embed_model=state["embed_model"])
        vectors = state["vectors"]
        if vectors is not None:
            if len(vectors) != len(trainset):
                raise ProgramLoadError(f"{len(vectors)} vectors saved for {len(trainset)} training examples")
            knn._vectors = [[float(x) for x in vector] for vector in vectors]
        args = dict(state["bootstrap"])
        if args.get("metric") is not None:
            args["metric"] = resolve_metric(args["metric"], allow_modules=allow_modules)
        teacher = state["teacher"]
        setup = _Setup(
            knn,
            BootstrapFewShot(**args),
            None if teacher is None else load_program(teacher, allow_modules=allow_modules),
            LocalExecutor(state["concurrency"]).concurrency,
            dict(state["bootstrap"]),
        )
        instance = cls.__new__(cls)
        instance._setup = setup
        return instance


def _vectorizer_state(vectorizer: Vectorizer | None) -> dict[str, Any]:
    """The vectorizer as JSON: a function by import path; an Embedder as its model (a name or a
    function's path) and batch size."""
    if vectorizer is None:
        return {"vectorizer": None}
    if not isinstance(vectorizer, Embedder):
        return {"vectorizer": import_path_of(vectorizer, what="KNN vectorizer")}
    model = vectorizer.model
    if isinstance(model, LM) or vectorizer.default_kwargs:
        raise ConfigurationError(
            "a KNNFewShot program whose Embedder holds an LM object or keyword arguments cannot be saved; "
            "use Embedder('provider/model') or Embedder(function)"
        )
    named = model if isinstance(model, str) else import_path_of(model, what="Embedder model")
    return {
        "vectorizer": named,
        "embedder": {"hosted": isinstance(model, str), "batch_size": vectorizer.batch_size},
    }


def _vectorizer_of(state: Mapping[str, Any], allow_modules: Collection[str] | None) -> Vectorizer | None:
    path, embedder = state.get("vectorizer"), state.get("embedder")
    if path is None:
        return None
    if embedder is not None and embedder.get("hosted"):
        return Embedder(path, batch_size=int(embedder["batch_size"]))
    function = import_object(path, allow_modules=allow_modules, what="vectorizer")
    return function if embedder is None else Embedder(function, batch_size=int(embedder["batch_size"]))


def _example_state(example: Example) -> dict[str, Any]:
    inputs = example.input_keys
    return {
        "fields": to_jsonable_python(example.to_dict()),
        "inputs": None if inputs is None else sorted(inputs),
    }


def _example_of(item: Mapping[str, Any]) -> Example:
    example = Example(item["fields"])
    return example if item["inputs"] is None else example.with_inputs(*item["inputs"])


def _bootstrap_state(bootstrap: BootstrapFewShot, given: Mapping[str, Any]) -> dict[str, Any]:
    """The bootstrap knobs as given, the metric as a spec (built-ins) or an import path."""
    if bootstrap.settings.teacher_lm is not None:  # an LM object: not JSON, and its key must stay here
        raise ConfigurationError(
            "a KNNFewShot program with teacher_settings={'lm': ...} cannot be saved; leave it out so "
            "teacher runs use the configured LM"
        )
    state = {key: value for key, value in given.items() if key != "teacher_settings"}
    metric = bootstrap.metric
    if metric is not None:
        spec = getattr(metric, "spec", None)
        state["metric"] = spec() if callable(spec) else import_path_of(metric, what="KNNFewShot metric")
    return state


class KNNFewShot(Optimizer):
    """DSPy's ``KNNFewShot(k, trainset, vectorizer, **few_shot_bootstrap_args)``; ``lm=`` embeds.

    ``vectorizer`` is a :class:`dspex.Embedder` or a callable from texts to vectors (``self.KNN``,
    DSPy's attribute, is the retriever). Without one, ``lm`` or the configured LM embeds.

    ``concurrency`` bounds the teacher runs of each call's bootstrap. ``max_lm_calls`` and
    ``max_cost_usd`` are accepted as on every optimizer; compile makes one embedding call, and the
    per-call bootstraps are the program's own cost, not the optimization's.
    """

    def __init__(
        self,
        k: int,
        trainset: Sequence[Example],
        vectorizer: Vectorizer | None = None,
        *,
        lm: LM | None = None,
        embed_model: str | None = None,
        concurrency: int | None = None,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **few_shot_bootstrap_args: Any,
    ) -> None:
        super().__init__()
        _check_bootstrap_args(few_shot_bootstrap_args)
        self.KNN = KNN(k, trainset, vectorizer, lm=lm, embed_model=embed_model)
        self.knn = self.KNN  # dspex's name for the same retriever
        self.few_shot_bootstrap_args = dict(few_shot_bootstrap_args)
        self.bootstrap = BootstrapFewShot(**few_shot_bootstrap_args)
        self._bootstrap_args = dict(few_shot_bootstrap_args)
        if self.bootstrap.metric is not None:
            check_labels("trainset", self.knn.trainset, self.bootstrap.metric)
        self.concurrency = LocalExecutor(concurrency).concurrency
        self.max_lm_calls, self.max_cost_usd = max_lm_calls, max_cost_usd

    async def acompile(
        self,
        student: Module,
        *,
        teacher: Module | None = None,
        executor: Executor | None = None,
        trainset: Sequence[Example] | None = None,
        valset: Sequence[Example] | None = None,
    ) -> Module:
        """The student, reset, whose calls pick their demos; the trainset is embedded here (one call)
        unless the vectorizer did it already. ``trainset``/``valset`` are accepted for the
        Teleprompter signature and not used: the neighbours come from the constructor's trainset."""
        self.executor_or_default(executor)  # checked for uniformity; calls run in the program's process
        with detached_trace():
            await self.knn.prepare()
        history = TrialHistory(optimizer="KNNFewShot")
        history.add(
            Trial(step=0, kind="embed", label="trainset embedded", num_examples=len(self.knn.trainset))
        )
        self.history = history
        setup = _Setup(self.knn, self.bootstrap, teacher, self.concurrency, self._bootstrap_args)
        return KNNFewShotProgram(student.reset_copy(), setup)


_KNN_KNOBS = (
    "k",
    "trainset",
    "vectorizer",
    "lm",
    "embed_model",
    "concurrency",
    "max_lm_calls",
    "max_cost_usd",
)


def _check_bootstrap_args(args: Mapping[str, Any]) -> None:
    accepted = [
        p.name
        for p in inspect.signature(BootstrapFewShot.__init__).parameters.values()
        if p.name != "self" and p.kind is not p.VAR_KEYWORD
    ]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"KNNFewShot: unknown argument(s) {', '.join(map(repr, unknown))}; accepted: "
            f"{', '.join(_KNN_KNOBS)} and BootstrapFewShot's {', '.join(accepted)}"
        )

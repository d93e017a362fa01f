"""``Ensemble``: one program that runs several and reduces their answers (e.g. by majority vote).

    ensemble = Ensemble(reduce_fn=dspex.majority, size=3).compile([prog_a, prog_b, prog_c, prog_d])
    ensemble(question="What is 3 + 4?").answer

As in DSPy: each call runs ``size`` of the programs (all when None), chosen at random, and returns
``reduce_fn(predictions)``, or the list of predictions without one; ``Ensemble(deterministic=True)``
fails as DSPy's does (AssertionError: not implemented there). Here the programs run concurrently,
and an :class:`EnsembledProgram` built directly with ``deterministic=True`` chooses them by the
content of the inputs, so the same inputs always go to the same programs. A compiled ensemble saves as
JSON (its ``reduce_fn`` by import path, e.g. ``dspex.majority``), so cluster workers can run it.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Self

from pydantic_core import to_jsonable_python

from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.ids import content_id
from dspex.optimizers._base import Optimizer, check_int, reject_unknown
from dspex.optimizers.budget import Budget
from dspex.optimizers.history import Trial, TrialHistory
from dspex.primitives import Module
from dspex.primitives.saving import load_node
from dspex.serialization import import_object, import_path_of

__all__ = ["Ensemble", "EnsembledProgram"]

Reduce = Callable[[list[Any]], Any]
_PROGRAM_SEGMENT = re.compile(r"programs\[(\d+)\]")


class EnsembledProgram(Module):
    """Runs ``size`` of ``programs`` (all when None) on each call and reduces their predictions."""

    def __init__(
        self,
        programs: Sequence[Module] = (),
        *,
        reduce_fn: Reduce | None = None,
        size: int | None = None,
        deterministic: bool = False,
    ) -> None:
        self.programs = list(programs)
        self.reduce_fn, self.size, self.deterministic = reduce_fn, size, deterministic
        self._rng = random.Random()

    def _chosen(self, inputs: dict[str, Any]) -> list[Module]:
        if self.size is None:
            return self.programs
        rng = random.Random(content_id(to_jsonable_python(inputs))) if self.deterministic else self._rng
        return rng.sample(self.programs, self.size)

    async def aforward(self, **inputs: Any) -> Any:
        outputs = await asyncio.gather(*(program.acall(**inputs) for program in self._chosen(inputs)))
        return self.reduce_fn(list(outputs)) if self.reduce_fn else list(outputs)

    # -- saving: the programs are its children; the settings and reduce_fn (by import path) its state

    def program_state(self) -> dict[str, Any]:
        """size, deterministic and ``reduce_fn`` by import path (None: the list of predictions)."""
        reduce_fn = self.reduce_fn
        return {
            "reduce_fn": None if reduce_fn is None else import_path_of(reduce_fn, what="Ensemble reduce_fn"),
            "size": self.size,
            "deterministic": self.deterministic,
        }

    @classmethod
    def new_for_load(cls, node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None) -> Self:
        """Built from the saved state and its ``programs[i]`` children (a list the loader cannot
        set by itself); the loader then overlays the children onto what this built."""
        state, children = node.get("state"), node.get("children")
        if not isinstance(state, Mapping) or not isinstance(children, Mapping):
            raise ProgramLoadError(f"a saved {cls.__name__} needs its 'state' and its programs")
        by_index: dict[int, Any] = {}
        for segment, child in children.items():
            found = _PROGRAM_SEGMENT.fullmatch(segment)
            if found is None or not isinstance(child, Mapping):
                raise ProgramLoadError(f"a saved {cls.__name__} has an unexpected child {segment!r}")
            by_index[int(found.group(1))] = child
        if sorted(by_index) != list(range(len(by_index))):
            raise ProgramLoadError(f"a saved {cls.__name__} has gaps in its programs: {sorted(by_index)}")
        programs = [load_node(by_index[i], allow_modules=allow_modules) for i in range(len(by_index))]
        path = state.get("reduce_fn")
        reduce_fn = (
            None if path is None else import_object(path, allow_modules=allow_modules, what="reduce_fn")
        )
        size = state.get("size")
        if size is not None and not (isinstance(size, int) and 1 <= size <= len(programs)):
            raise ProgramLoadError(f"a saved {cls.__name__} has size={size!r} for {len(programs)} programs")
        return cls(
            programs,
            reduce_fn=reduce_fn,
            size=size,
            deterministic=bool(state.get("deterministic")),
        )


class Ensemble(Optimizer):
    """DSPy's ``Ensemble(reduce_fn=None, size=None, deterministic=False)``.

    ``deterministic=True`` raises AssertionError, as in DSPy (build ``EnsembledProgram(...,
    deterministic=True)`` for dspex's input-keyed choice). ``max_lm_calls`` / ``max_cost_usd`` are
    accepted as on every optimizer; compile makes no LM call.
    """

    def __init__(
        self,
        *,
        reduce_fn: Reduce | None = None,
        size: int | None = None,
        deterministic: bool = False,
        max_lm_calls: int | None = None,
        max_cost_usd: float | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        reject_unknown("Ensemble", unknown, Ensemble.__init__)
        if deterministic is not False:
            # DSPy's message, word for word: code that catches it keeps working.
            raise AssertionError("TODO: Implement example hashing for deterministic ensemble.")
        if reduce_fn is not None and not callable(reduce_fn):
            raise ConfigurationError(f"reduce_fn must be callable (e.g. dspex.majority), got {reduce_fn!r}")
        self.reduce_fn = reduce_fn
        self.size = check_int("size", size, minimum=1, optional=True)
        self.deterministic = bool(deterministic)
        self._limits = Budget(max_lm_calls, max_cost_usd)

    async def acompile(self, programs: Sequence[Module]) -> EnsembledProgram:
        """One program over ``programs`` (DSPy's ``compile(programs)``)."""
        items = [] if isinstance(programs, Module) else list(programs)
        if not items or not all(isinstance(p, Module) for p in items):
            raise ConfigurationError("Ensemble.compile needs a non-empty list of programs (dspex modules)")
        if self.size is not None and self.size > len(items):
            raise ConfigurationError(
                f"Ensemble size={self.size} is more than the {len(items)} programs given"
            )
        self.history = TrialHistory(optimizer="Ensemble")
        self.history.add(Trial(step=0, kind="ensemble", label=f"{len(items)} programs", num_examples=0))
        return EnsembledProgram(
            items, reduce_fn=self.reduce_fn, size=self.size, deterministic=self.deterministic
        )

"""Programs as self-describing JSON: the format, its dump and build, and the candidate id.

A saved program is a tree of nodes, one per module, children keyed by attribute path segment::

    {"dspex_program": 1,                         # format major version (root only)
     "type": "pkg.mod:TwoStep",                  # custom Module: rebuilt by import path
     "children": {
        "draft": {"type": "dspex.ChainOfThought", "children": {
            "predict": {"type": "dspex.Predict",
                        "signature": {...Signature.dump()...}, "demos": [{...}], "adapter": "chat",
                        "lm": {...LMSettings, never a key...}, "config": {"temperature": 0.0},
                        "children": {}}}},
        "steps[0]": {...}}}

Built-in modules (``dspex.Predict``, ``dspex.ChainOfThought``) rebuild from the JSON alone. A custom
``Module`` subclass is imported by its path and built with no arguments, then the saved state is laid
over it by path; a class that needs arguments is built by its user and loaded into with
``MyModule(...).load(path)``. ``allow_modules`` restricts which modules a program may import
(:class:`~dspex.errors.SecurityPolicyError` otherwise).

Each module class answers the protocol used here: ``program_type()``, ``new_for_load(node)``,
``named_children()``, ``is_predictor``, and for predictors ``predictor_state()`` /
``load_predictor_state(state)``. A module with settings of its own (``ReAct``'s tools and
``max_iters``, ``BestOfN``'s ``N`` and reward function) defines ``program_state()``: its result is
saved as the node's ``"state"`` and read back by its ``new_for_load(node)``. Code it references
(tools, reward functions) is saved by import path (:func:`import_path_of`) and imported under the
load's ``allow_modules`` policy (:func:`import_object`).

Files (DSPy's state with this tree inside, pickles, ``save_program`` directories) are written and
read by :mod:`dspex.primitives.saving`, which also gives the loaders that return a
:class:`~dspex.Module` (``dspex.load``, ``load_program``, ``load_node``). This module sits below
the primitives: it knows a module only as a :class:`ProgramNode`, so it never imports them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Final, NoReturn, Protocol

from dspex.errors import ConfigurationError, DspexError, ProgramLoadError, SecurityPolicyError
from dspex.ids import canonical_json, content_id

__all__ = [
    "BUILTIN_TYPES",
    "FORMAT_VERSION",
    "VERSION_KEY",
    "ProgramNode",
    "build_node",
    "build_program",
    "candidate_id",
    "check_header",
    "dump_program",
    "import_object",
    "import_path_of",
    "overlay_program",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
VERSION_KEY: Final = "dspex_program"
# Short names of the built-in modules, and where their classes live.
BUILTIN_TYPES: Final[Mapping[str, str]] = {
    "dspex.Predict": "dspex.modules.predict:Predict",
    "dspex.ChainOfThought": "dspex.modules.chain_of_thought:ChainOfThought",
    "dspex.ReAct": "dspex.modules.react:ReAct",
    "dspex.MultiChainComparison": "dspex.modules.multi_chain_comparison:MultiChainComparison",
    "dspex.BestOfN": "dspex.modules.best_of_n:BestOfN",
    "dspex.Refine": "dspex.modules.refine:Refine",
}
# dspex's own modules are trusted code: a policy restricts user code only.
_TRUSTED_PACKAGE: Final = "dspex"
# dspex's own modules that a program may never name, whatever the policy: LocalInterpreter runs
# code on the host, outside the sandbox (a job must not make a worker do that)
_NEVER_NAMED: Final = ("dspex.primitives.local_interpreter", "dspex.primitives._local_worker")


class ProgramNode(Protocol):
    """What the format needs of a module (every :class:`dspex.Module` answers it).

    A predictor also has ``predictor_state()`` and ``load_predictor_state(node, ...)``, a module
    with settings of its own ``program_state()``, and every module class ``new_for_load(node)``;
    those are looked up on the object, as the module docs describe.
    """

    is_predictor: ClassVar[bool]

    def program_type(self) -> str:
        """The type the module is saved as."""
        ...

    def named_children(self) -> Sequence[tuple[str, ProgramNode]]:
        """The sub-modules, by attribute path segment."""
        ...


# -- dumping ---------------------------------------------------------------------------------------


def dump_program(module: ProgramNode) -> dict[str, Any]:
    """``module`` as JSON data: ``{"dspex_program": 1, "type": ..., ..., "children": {...}}``."""
    data = {VERSION_KEY: FORMAT_VERSION, **_node(module, ancestors=())}
    try:
        canonical_json(data)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{type(module).__qualname__} cannot be saved as JSON ({exc}); demos and config must hold "
            "JSON values (str, numbers, bool, None, lists, dicts, pydantic models)"
        ) from exc
    return data


def _node(module: ProgramNode, *, ancestors: tuple[int, ...]) -> dict[str, Any]:
    if id(module) in ancestors:
        raise ConfigurationError(f"{type(module).__qualname__} contains itself; a program must be a tree")
    node: dict[str, Any] = {"type": module.program_type()}
    if module.is_predictor:
        node.update(module.predictor_state())  # type: ignore[attr-defined]
    program_state = getattr(module, "program_state", None)
    if callable(program_state):
        # A module's own settings beyond its children (ReAct's tools, BestOfN's N and reward_fn);
        # its new_for_load reads them back from node["state"].
        node["state"] = program_state()
    inner = (*ancestors, id(module))
    node["children"] = {segment: _node(child, ancestors=inner) for segment, child in module.named_children()}
    return node


def candidate_id(program: ProgramNode | Mapping[str, Any]) -> str:
    """The content id of a program (or of its dumped JSON data). Fields left out: none."""
    data = program if isinstance(program, Mapping) else dump_program(program)
    return content_id(data)


# -- loading ----------------------------------------------------------------------------------------


# -- building --------------------------------------------------------------------------------------


def build_program(
    data: Mapping[str, Any], *, allow_modules: Collection[str] | None = None, source: str = "program"
) -> ProgramNode:
    """Build a program from :func:`dump_program` data (its format version checked).

    ``allow_modules``: None imports any custom module class; otherwise a class's module must be one
    of these (or inside one of these packages), else :class:`SecurityPolicyError`.
    """
    check_header(data, source)
    return _Loader(allow_modules, source).build(data, "program")


def build_node(
    node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None, source: str = "program"
) -> ProgramNode:
    """Build one saved node (no format header), under the same ``allow_modules`` policy."""
    return _Loader(allow_modules, source).build(node, "program")


def overlay_program(
    module: ProgramNode,
    data: Mapping[str, Any],
    *,
    allow_modules: Collection[str] | None = None,
    source: str = "program",
) -> None:
    """Lay :func:`dump_program` data over ``module`` (built by the caller), node by node; the
    caller checks the header (:func:`check_header`) first."""
    _Loader(allow_modules, source).overlay(module, data, "program")


def check_header(data: Mapping[str, Any], source: str) -> None:
    """ProgramLoadError unless ``data`` carries a format version this dspex reads."""
    if not isinstance(data, Mapping) or VERSION_KEY not in data:
        raise ProgramLoadError(f"{source}: not a dspex program (no {VERSION_KEY!r} format version)")
    version = data[VERSION_KEY]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProgramLoadError(f"{source}: corrupt program, format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise ProgramLoadError(
            f"{source}: written by a newer dspex (program format {version}; this dspex reads up to "
            f"{FORMAT_VERSION}); upgrade dspex to load it"
        )


class _Loader:
    """One load: the import policy and the file name errors mention."""

    def __init__(self, allow_modules: Collection[str] | None, source: str) -> None:
        self.allow_modules = None if allow_modules is None else tuple(allow_modules)
        self.source = source
        self.lm_pool: dict[str, Any] = {}  # one LM object per distinct LM settings in the program

    def build(self, node: Mapping[str, Any], where: str) -> ProgramNode:
        cls = self.resolve(self.field(node, "type", str, where), where)
        module: ProgramNode = self.guard(
            where, lambda: cls.new_for_load(node, allow_modules=self.allow_modules)
        )
        self.overlay(module, node, where)
        return module

    def overlay(self, module: ProgramNode, node: Mapping[str, Any], where: str) -> None:
        saved_type = self.field(node, "type", str, where)
        if saved_type != module.program_type():
            self.fail(where, f"saved as {saved_type} but the program has a {module.program_type()} there")
        if module.is_predictor:
            load_state = module.load_predictor_state  # type: ignore[attr-defined]
            self.guard(
                where, lambda: load_state(node, lm_pool=self.lm_pool, allow_modules=self.allow_modules)
            )
        self.overlay_children(module, self.field(node, "children", dict, where), where)

    def overlay_children(self, module: ProgramNode, children: Mapping[str, Any], where: str) -> None:
        present = dict(module.named_children())
        for segment, child in children.items():
            inner = f"{where}.{segment}"
            if not isinstance(child, Mapping):
                self.fail(inner, "corrupt program, a child node is not a JSON object")
            if segment in present:
                self.overlay(present[segment], child, inner)
            elif segment.isidentifier() and segment not in vars(module):
                setattr(module, segment, self.build(child, inner))
            else:
                self.fail(inner, f"{type(module).__qualname__} has no sub-module there to load into")
        missing = sorted(set(present) - set(children))
        if missing:
            logger.warning("%s: %s keeps its own %s (not in the saved program)", self.source, where, missing)

    def resolve(self, type_name: str, where: str) -> Any:
        import_path = BUILTIN_TYPES.get(type_name, type_name)
        module_name, _, qualname = import_path.partition(":")
        if not module_name or not qualname:
            self.fail(where, f"unknown module type {type_name!r} (expected 'package.module:ClassName')")
        self.check_policy(module_name, type_name, where)
        if "<locals>" in qualname:
            self.fail(where, f"{type_name} was defined inside a function; define it at module level")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise ProgramLoadError(f"{self.source}: at {where}: cannot import {type_name} ({exc})") from exc
        if not isinstance(found, type) or not hasattr(found, "new_for_load"):
            self.fail(where, f"{type_name} is not a dspex Module class")
        return found

    def check_policy(self, module_name: str, type_name: str, where: str) -> None:
        if self.allow_modules is None or _within(module_name, (_TRUSTED_PACKAGE,)):
            return
        if not _within(module_name, self.allow_modules):
            raise SecurityPolicyError(
                f"{self.source}: at {where}: the program names {type_name}, outside the allowed modules "
                f"{sorted(self.allow_modules)}; add its module to the allowed list to load it"
            )

    def field(self, node: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
        value = node.get(key)
        if not isinstance(value, kind):
            self.fail(where, f"corrupt program, {key!r} is missing or not a {kind.__name__}")
        return value

    def guard(self, where: str, step: Any) -> Any:
        try:
            return step()
        except (ProgramLoadError, SecurityPolicyError) as exc:
            if str(exc).startswith(self.source):
                raise
            # A policy refusal stays one (workers treat it apart from a corrupt file), with the place added.
            kind = SecurityPolicyError if isinstance(exc, SecurityPolicyError) else ProgramLoadError
            raise kind(f"{self.source}: at {where}: {exc}") from exc
        except (DspexError, ValueError, TypeError, KeyError) as exc:
            raise ProgramLoadError(f"{self.source}: at {where}: corrupt program ({exc})") from exc

    def fail(self, where: str, problem: str) -> NoReturn:
        raise ProgramLoadError(f"{self.source}: at {where}: {problem}")


def _within(module_name: str, packages: Collection[str]) -> bool:
    return any(module_name == p or module_name.startswith(f"{p}.") for p in packages)


# -- code references (ReAct's tools, BestOfN's reward function) -------------------------------------


# -- code references (ReAct's tools, BestOfN's reward function) ------------------------------------


def import_path_of(obj: Any, *, what: str) -> str:
    """``"package.module:QualName"`` of a module-level function or class, for saving a reference to it.

    Lambdas, functions defined inside functions and objects that import back as something else cannot
    be found again by a loader: :class:`ConfigurationError` naming ``what``.
    """
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        raise ConfigurationError(f"{what} ({obj!r}) has no import path; save a module-level function")
    if "<" in qualname or module_name == "__main__":
        raise ConfigurationError(
            f"{what} ({module_name}:{qualname}) cannot be saved by import path: define it at module level "
            "in an importable module (not a lambda, a nested function or __main__)"
        )
    return f"{module_name}:{qualname}"


def import_object(path: str, *, allow_modules: Collection[str] | None = None, what: str = "object") -> Any:
    """The object a ``"package.module:QualName"`` path names, under the ``allow_modules`` policy.

    A malformed path or a failed import is a :class:`ProgramLoadError`; a module outside
    ``allow_modules`` (when given) a :class:`SecurityPolicyError`. dspex's own modules are always allowed.
    """
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ProgramLoadError(f"{what} {path!r} is not an import path ('package.module:name')")
    allowed = None if allow_modules is None else (*allow_modules, _TRUSTED_PACKAGE)
    if allowed is not None and not _within(module_name, allowed):
        raise SecurityPolicyError(
            f"{what} {path!r} is outside the allowed modules {sorted(allow_modules or ())}; "
            "add its module to the allowed list to load it"
        )
    refused = SecurityPolicyError(f"{what} {path!r} runs code outside the sandbox; a program cannot name it")
    if _within(module_name, _NEVER_NAMED):
        raise refused
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ProgramLoadError(f"cannot import {what} {path!r} ({exc})") from exc
    if _within(str(getattr(found, "__module__", "")), _NEVER_NAMED):  # e.g. "dspex:LocalInterpreter"
        raise refused
    return found

"""Programs as self-describing JSON: save, load, and the candidate id.

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

A saved ``.json`` file is DSPy 3.4.1's state file (see :mod:`dspex._dspy_state`: one entry per
predictor plus ``"metadata"``), which DSPy's ``program.load`` reads, with the tree above under the
extra key ``"dspex_program"``::

    {"draft.predict": {"traces": [], "train": [], "demos": [...], "signature": {...}, "lm": {...}},
     "check": {...},
     "metadata": {"dependency_versions": {"python": "3.11", "dspy": "3.4.1", "cloudpickle": "3.1"}},
     "dspex_program": {"dspex_program": 1, "type": "pkg.mod:TwoStep", "children": {...}}}

Loading builds the program from ``"dspex_program"`` and then lays the DSPy part over it, so an edit
to the DSPy part (instructions, demos) wins; an LM there is rebuilt only if it differs from the one
the program part describes. Files of the first format (the tree alone) still load. Pickles
(``.pkl``, ``save_program=True`` directories) are read only with ``allow_pickle=True``, through
:mod:`dspex._dspy_pickle`'s restricted unpickler.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from dspex import _dspy_pickle, _dspy_state
from dspex.errors import ConfigurationError, DspexError, ProgramLoadError, SecurityPolicyError
from dspex.ids import canonical_json, content_id

if TYPE_CHECKING:
    from dspex.primitives import Module

__all__ = [
    "BUILTIN_TYPES",
    "FORMAT_VERSION",
    "candidate_id",
    "dump_program",
    "import_object",
    "import_path_of",
    "load",
    "load_into",
    "load_node",
    "load_program",
    "save",
    "save_program",
    "saved_state",
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
_PROGRAM_PICKLE: Final = "program.pkl"
_METADATA_FILE: Final = "metadata.json"
# DSPy pickles with cloudpickle's default, the highest protocol.
_PICKLE_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
# dspex's own modules are trusted code: a policy restricts user code only.
_TRUSTED_PACKAGE: Final = "dspex"


# -- dumping ----------------------------------------------------------------------------------------


def dump_program(module: Module) -> dict[str, Any]:
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


def _node(module: Module, *, ancestors: tuple[int, ...]) -> dict[str, Any]:
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


def save(
    module: Module,
    path: str | Path,
    *,
    save_program: bool = False,
    modules_to_serialize: Sequence[Any] | None = None,
) -> None:
    """``module.save(path)``, DSPy's forms.

    ``"p.json"``: DSPy's state JSON (which DSPy's ``program.load`` reads) with this program's
    self-describing JSON under ``"dspex_program"`` (so ``dspex.load`` rebuilds it alone).
    ``"p.pkl"``: the same state pickled (values that JSON cannot hold, such as dates, stay as they are).
    ``save_program=True``: a directory (no suffix) holding ``program.pkl`` and ``metadata.json``, as
    DSPy writes; dspex pickles plain data only (its program JSON and state), which
    ``dspex.load(dir, allow_pickle=True)`` reads back. ``modules_to_serialize`` (DSPy's pickling of
    code by value) is not supported: dspex saves custom classes by import path.
    """
    target = Path(path)
    if modules_to_serialize:
        raise ConfigurationError(
            "modules_to_serialize is not supported: dspex saves custom module classes by import path, not "
            "their code; make the module importable where the program is loaded"
        )
    if save_program:
        _save_directory(module, target)
    elif target.suffix == ".json":
        _write_atomic(target, _json_text(saved_state(module, json_mode=True)).encode())
    elif target.suffix == ".pkl":
        logger.warning(
            "Loading untrusted .pkl files can run arbitrary code, which may be dangerous. To avoid this, "
            'prefer saving using json format using module.save("module.json").'
        )
        _write_atomic(target, pickle.dumps(saved_state(module, json_mode=False), protocol=_PICKLE_PROTOCOL))
    else:
        raise ValueError(
            f"`path` must end with `.json` or `.pkl` when `save_program=False`, but received: {path}"
        )


def save_program(module: Module, path: str | Path) -> None:
    """Write ``module`` to a ``.json`` file that both ``dspex.load`` and DSPy's ``program.load`` read."""
    _write_atomic(Path(path), _json_text(saved_state(module, json_mode=True)).encode())


def saved_state(module: Module, *, json_mode: bool) -> dict[str, Any]:
    """What a saved file holds: DSPy's state by predictor name, ``"metadata"`` and the dspex program."""
    state = _dspy_state.dump_module_state(module, json_mode=json_mode)
    for reserved in (_dspy_state.METADATA_KEY, _dspy_state.PROGRAM_KEY):
        if reserved in state:
            raise ConfigurationError(
                f"{type(module).__qualname__} has a predictor named {reserved!r}, which the saved file "
                "reserves; rename that attribute"
            )
    state[_dspy_state.METADATA_KEY] = {"dependency_versions": _dspy_state.dependency_versions()}
    try:
        state[_dspy_state.PROGRAM_KEY] = dump_program(module)
    except ConfigurationError:
        if json_mode:
            raise
        # A pickle may hold values JSON cannot; it then carries DSPy's state alone (load it into a
        # program built in code: program.load(path, allow_pickle=True)).
        logger.warning("%s: saving the state only (its values are not all JSON)", type(module).__qualname__)
    return state


def _save_directory(module: Module, target: Path) -> None:
    if target.suffix:
        raise ValueError(
            "`path` must point to a directory without a suffix when `save_program=True`, "
            f"but received: {target}"
        )
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"The path '{target}' exists but is not a directory.")
    target.mkdir(parents=True, exist_ok=True)
    data = saved_state(module, json_mode=True)
    _write_atomic(target / _PROGRAM_PICKLE, pickle.dumps(data, protocol=_PICKLE_PROTOCOL))
    _write_atomic(target / _METADATA_FILE, _json_text(data[_dspy_state.METADATA_KEY]).encode())


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _write_atomic(target: Path, content: bytes) -> None:
    """Write ``content`` to ``target`` so that a reader never sees half a file."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def candidate_id(program: Module | Mapping[str, Any]) -> str:
    """The content id of a program (or of its dumped JSON data). Fields left out: none."""
    data = program if isinstance(program, Mapping) else dump_program(program)
    return content_id(data)


# -- loading ----------------------------------------------------------------------------------------


def load(
    path: str | Path,
    *,
    allow_modules: Collection[str] | None = None,
    allow_pickle: bool = False,
    allow_unsafe_lm_state: bool = False,
) -> Module:
    """Rebuild the program saved at ``path``: ``dspex.load("qa.json")``.

    Reads what ``module.save`` writes (``.json``, ``.pkl`` and ``save_program=True`` directories)
    and DSPy's ``save_program=True`` directories of standard modules. Pickles are read only with
    ``allow_pickle=True``, through a restricted unpickler that builds no class outside a fixed list
    and runs no pickled code. A DSPy state file holds no program structure: build the program and
    call ``program.load(path)``. ``allow_unsafe_lm_state`` keeps a DSPy LM state's endpoint keys.
    """
    source = str(path)
    data = _read_saved(Path(path), allow_pickle)
    if not isinstance(data, Mapping):
        return _dspy_pickle.program_from_dspy(data, source=source, allow_modules=allow_modules)
    program_data = data.get(VERSION_KEY)
    if isinstance(program_data, Mapping):
        program = load_program(program_data, allow_modules=allow_modules, source=source)
        _dspy_state.load_module_state(
            program,
            _state_part(data, source),
            allow_unsafe_lm_state=allow_unsafe_lm_state,
            source=source,
            keep_equal_lms=True,
        )
        return program
    if program_data is None and _looks_like_dspy_state(data):
        raise ProgramLoadError(
            f"{source}: a DSPy state file (predictor states only, no program structure); build the program "
            "in code and load the state into it: program.load(path)"
        )
    return load_program(data, allow_modules=allow_modules, source=source)


def load_program(
    data: Mapping[str, Any], *, allow_modules: Collection[str] | None = None, source: str = "program"
) -> Module:
    """Rebuild a program from :func:`dump_program` data.

    ``allow_modules``: None imports any custom module class; otherwise a class's module must be one
    of these (or inside one of these packages), else :class:`SecurityPolicyError`.
    """
    _check_header(data, source)
    return _Loader(allow_modules, source).build(data, "program")


def load_node(
    node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None, source: str = "program"
) -> Module:
    """Rebuild one saved node (no format header): for a ``new_for_load`` that builds its own
    children, such as an ensemble's list of programs, under the same ``allow_modules`` policy."""
    return _Loader(allow_modules, source).build(node, "program")


def load_into(
    module: Module,
    path: str | Path,
    *,
    allow_modules: Collection[str] | None = None,
    allow_pickle: bool = False,
    allow_unsafe_lm_state: bool = False,
) -> None:
    """Overlay the program or state saved at ``path`` onto ``module`` (built by the caller)."""
    source = str(path)
    data = _read_saved(Path(path), allow_pickle)
    if not isinstance(data, Mapping):
        data = _dspy_pickle.state_from_dspy_program(data, source=source)
    program_data = data.get(VERSION_KEY)
    if isinstance(program_data, Mapping):
        _check_header(program_data, source)
        # Before anything changes: a file without a state for every predictor changes nothing.
        _dspy_state.check_state_names(module, data, source)
        _Loader(allow_modules, source).overlay(module, program_data, "program")
        _dspy_state.load_module_state(
            module,
            _state_part(data, source),
            allow_unsafe_lm_state=allow_unsafe_lm_state,
            source=source,
            keep_equal_lms=True,
        )
    elif program_data is not None:  # a file of dspex's first format: the program JSON alone
        _check_header(data, source)
        _Loader(allow_modules, source).overlay(module, data, "program")
    else:
        _dspy_state.load_module_state(
            module, _state_part(data, source), allow_unsafe_lm_state=allow_unsafe_lm_state, source=source
        )


def _state_part(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The predictor states of a saved file (its metadata checked and left out)."""
    metadata = data.get(_dspy_state.METADATA_KEY)
    if metadata is not None:
        _check_metadata(metadata, source)
    return {key: value for key, value in data.items() if key not in (_dspy_state.METADATA_KEY, VERSION_KEY)}


def _check_metadata(metadata: Any, source: str) -> None:
    versions = metadata.get("dependency_versions") if isinstance(metadata, Mapping) else None
    if not isinstance(versions, Mapping):
        raise ProgramLoadError(
            f'{source}: \'metadata\' does not fit, expected {{"dependency_versions": {{"dspy": ..., ...}}}}'
        )
    saved = versions.get("dspy")
    if saved is not None and saved != _dspy_state.DSPY_VERSION:
        logger.warning(
            "%s: saved by DSPy %s; dspex reads DSPy %s's format (keys it does not know are ignored)",
            source, saved, _dspy_state.DSPY_VERSION,
        )  # fmt: skip


def _looks_like_dspy_state(data: Mapping[str, Any]) -> bool:
    return _dspy_state.METADATA_KEY in data or any(
        isinstance(value, Mapping) and "signature" in value for value in data.values()
    )


def _read_saved(path: Path, allow_pickle: bool) -> Any:
    """The data of a saved file or ``save_program`` directory (a pickle only with ``allow_pickle``)."""
    if path.is_dir():
        pickled = path / _PROGRAM_PICKLE
        _refuse_pickle(pickled, allow_pickle, "a pickled program (save_program=True)")
        if (path / _METADATA_FILE).exists():
            _check_metadata(_read(path / _METADATA_FILE), str(path / _METADATA_FILE))
        return _dspy_pickle.load_restricted(pickled, program=True)
    if path.suffix == ".pkl":
        _refuse_pickle(path, allow_pickle, "a pickled state")
        return _dspy_pickle.load_restricted(path, program=False)
    return _read(path)


def _read(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProgramLoadError(f"{path}: cannot read the program file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProgramLoadError(f"{path}: corrupt program file, not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ProgramLoadError(f"{path}: corrupt program file, expected a JSON object")
    return data


def _refuse_pickle(path: Path, allow_pickle: bool, what: str) -> None:
    if not allow_pickle:
        raise ProgramLoadError(
            f"{path}: {what}; loading pickles is refused unless you pass allow_pickle=True (only for files "
            "you trust; dspex reads them with a restricted unpickler that builds only known classes)"
        )


def _check_header(data: Mapping[str, Any], source: str) -> None:
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

    def build(self, node: Mapping[str, Any], where: str) -> Module:
        cls = self.resolve(self.field(node, "type", str, where), where)
        module: Module = self.guard(where, lambda: cls.new_for_load(node, allow_modules=self.allow_modules))
        self.overlay(module, node, where)
        return module

    def overlay(self, module: Module, node: Mapping[str, Any], where: str) -> None:
        saved_type = self.field(node, "type", str, where)
        if saved_type != module.program_type():
            self.fail(where, f"saved as {saved_type} but the program has a {module.program_type()} there")
        if module.is_predictor:
            load_state = module.load_predictor_state  # type: ignore[attr-defined]
            self.guard(
                where, lambda: load_state(node, lm_pool=self.lm_pool, allow_modules=self.allow_modules)
            )
        self.overlay_children(module, self.field(node, "children", dict, where), where)

    def overlay_children(self, module: Module, children: Mapping[str, Any], where: str) -> None:
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
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ProgramLoadError(f"cannot import {what} {path!r} ({exc})") from exc
    return found

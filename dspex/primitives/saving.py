"""Programs saved to files and loaded back: ``module.save``, ``dspex.load``, ``module.load``.

The program's own JSON (its tree of modules) is :mod:`dspex.serialization`'s format; this module
writes it into files and reads it back, returning :class:`~dspex.Module` objects.

A saved ``.json`` file is DSPy 3.4.1's state file (see :mod:`dspex._dspy_state`: one entry per
predictor plus ``"metadata"``), which DSPy's ``program.load`` reads, with the program's tree
(:mod:`dspex.serialization`) under the extra key ``"dspex_program"``::

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

import json
import logging
import os
import pickle
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from dspex import _dspy_pickle, _dspy_state
from dspex.errors import ConfigurationError, ProgramLoadError
from dspex.serialization import (
    VERSION_KEY,
    build_node,
    build_program,
    check_header,
    dump_program,
    overlay_program,
)

if TYPE_CHECKING:
    from dspex.primitives.module import Module

__all__ = ["load", "load_into", "load_node", "load_program", "save", "save_program", "saved_state"]

# One logger for saved programs, their format and their files alike.
logger = logging.getLogger("dspex.serialization")

_PROGRAM_PICKLE: Final = "program.pkl"
_METADATA_FILE: Final = "metadata.json"
# DSPy pickles with cloudpickle's default, the highest protocol.
_PICKLE_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


# -- saving ----------------------------------------------------------------------------------------


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


# -- loading ---------------------------------------------------------------------------------------


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
    # the loader builds only classes with a new_for_load (dspex.Module's): what it returns is a Module
    return cast("Module", build_program(data, allow_modules=allow_modules, source=source))


def load_node(
    node: Mapping[str, Any], *, allow_modules: Collection[str] | None = None, source: str = "program"
) -> Module:
    """Rebuild one saved node (no format header): for a ``new_for_load`` that builds its own
    children, such as an ensemble's list of programs, under the same ``allow_modules`` policy."""
    return cast("Module", build_node(node, allow_modules=allow_modules, source=source))


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
        check_header(program_data, source)
        # Before anything changes: a file without a state for every predictor changes nothing.
        _dspy_state.check_state_names(module, data, source)
        overlay_program(module, program_data, allow_modules=allow_modules, source=source)
        _dspy_state.load_module_state(
            module,
            _state_part(data, source),
            allow_unsafe_lm_state=allow_unsafe_lm_state,
            source=source,
            keep_equal_lms=True,
        )
    elif program_data is not None:  # a file of dspex's first format: the program JSON alone
        check_header(data, source)
        overlay_program(module, data, allow_modules=allow_modules, source=source)
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
        # DSPy's two sentences lead (code matches on them); then what dspex does differently.
        refusal = (
            "Loading with pickle is not allowed"
            if what.startswith("a pickled program")
            else "Loading .pkl files can run arbitrary code, which may be dangerous"
        )
        raise ProgramLoadError(
            f"{path}: {refusal}: {what}, read only with allow_pickle=True (only for files you trust; "
            "dspex reads them with a restricted unpickler that builds only known classes)"
        )

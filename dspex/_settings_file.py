"""``dspex.settings.save`` / ``dspex.load_settings``: DSPy's settings file, a cloudpickle of the
settings in effect.

A pickle can run code when it is read, so reading one needs ``allow_pickle=True``, as in DSPy.
LMs are pickled by their settings only (``LM.__reduce__``): an ``api_key=`` given to an LM is never
written; the loading process reads its key from the LM's ``api_key_env`` as usual.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import cloudpickle

from dspex.errors import ConfigurationError

__all__ = ["load_settings", "save_settings"]

logger = logging.getLogger(__name__)


def save_settings(
    values: Mapping[str, Any],
    path: str | os.PathLike[str],
    modules_to_serialize: Iterable[ModuleType] | None = None,
    exclude_keys: Iterable[str] | None = None,
) -> None:
    """Pickle ``values`` (less ``exclude_keys``) to ``path``; the code of ``modules_to_serialize``
    goes into the file by value, so it loads where those modules cannot be imported."""
    excluded = set(exclude_keys or ())
    kept = {name: value for name, value in values.items() if name not in excluded}
    logger.warning(
        "dspex.settings are saved with cloudpickle, and reading the file runs code: load it only "
        "from a source you trust"
    )
    with _pickled_by_value(list(modules_to_serialize or ())):
        _refuse_unpicklable(kept)
        data = cloudpickle.dumps(kept)
    with open(path, "wb") as file:
        file.write(data)


def load_settings(path: str | os.PathLike[str], allow_pickle: bool = False) -> dict[str, Any]:
    """Read a file written by ``dspex.settings.save``; pass the result to ``dspex.configure(**...)``."""
    if not allow_pickle:
        raise ConfigurationError(
            f"{os.fspath(path)}: loading .pkl files can run arbitrary code, which may be dangerous; "
            "pass allow_pickle=True only if you trust the source of the file"
        )
    with open(path, "rb") as file:
        loaded = cloudpickle.load(file)
    if not isinstance(loaded, dict):
        raise ConfigurationError(
            f"{os.fspath(path)} is not a settings file: it holds a {type(loaded).__name__}, not a dict"
        )
    return loaded


def _refuse_unpicklable(values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            raise ConfigurationError(
                f"dspex.settings.save: setting {name!r} ({type(value).__name__}) cannot be pickled: "
                f"{exc}; leave it out with exclude_keys=[{name!r}] or set it to a picklable value"
            ) from exc


@contextmanager
def _pickled_by_value(modules: list[ModuleType]) -> Iterator[None]:
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)

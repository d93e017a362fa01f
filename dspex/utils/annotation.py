"""DSPy's ``@experimental``: mark a function or class as experimental in its docstring.

@experimental(version="3.1.0")
def new_thing(): ...
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import TypeVar, overload

__all__ = ["experimental"]

_T = TypeVar("_T")


@overload
def experimental(f: _T, version: str | None = None) -> _T: ...
@overload
def experimental(f: None = None, version: str | None = None) -> Callable[[_T], _T]: ...
def experimental(f: object = None, version: str | None = None) -> object:
    """Put DSPy's "Experimental: ..." notice on ``f``'s docstring (as ``@experimental`` or
    ``@experimental(version="X.Y.Z")``); ``f`` itself is returned, unchanged otherwise."""
    if f is None:
        return lambda api: _mark(api, version)
    return _mark(f, version)


def _mark(api: _T, version: str | None) -> _T:
    kind = _kind(api)
    doc = api.__doc__
    since = f" (introduced in v{version})" if version else ""
    notice = (
        f"{_indent_of(doc)}Experimental: This {kind} may change or be removed in a future release "
        f"without warning{since}."
    )
    if kind == "property":  # a property's docstring opens with what it returns: the notice goes last
        api.__doc__ = f"{doc}\n\n{notice}" if doc else notice
    else:
        api.__doc__ = f"{notice}\n\n{doc}" if doc else notice
    return api


def _kind(api: object) -> str:
    if inspect.isclass(api):
        return "class"
    if inspect.isfunction(api):
        return "function"
    if isinstance(api, property):
        return "property"
    if isinstance(api, types.MethodType):
        return "method"
    return str(type(api))


def _indent_of(doc: str | None) -> str:
    """The indentation of a multi-line docstring (that of its closing line), so the notice lines up."""
    if not doc or "\n" not in doc:
        return ""
    last = doc.rsplit("\n", 1)[-1]
    return last[: len(last) - len(last.lstrip())]

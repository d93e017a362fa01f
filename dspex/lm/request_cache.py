"""``request_cache``: DSPy's decorator that answers repeated calls of a function from ``dspex.cache``.

    @request_cache(ignored_args_for_cache_key=["api_key"])
    def embed(model: str, texts: list[str]) -> list[list[float]]: ...

The request is the call's keyword arguments (positional ones as ``positional_arg_<i>``), or the one
argument named by ``cache_arg_name``, plus the function's qualified name, so two functions never
share entries. It is copied before the call, so a function that edits its arguments in place still
stores its result under what it was called with. Sync and async functions both work.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["request_cache"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_NEVER_IN_KEY = ("api_key", "api_base", "base_url")


def _request(
    fn: Callable[..., Any], cache_arg_name: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    if cache_arg_name:
        request = dict(copy.deepcopy(kwargs[cache_arg_name]))
    else:
        request = copy.deepcopy(kwargs)
        request.update({f"positional_arg_{i}": arg for i, arg in enumerate(args)})
    request["_fn_identifier"] = f"{fn.__module__}.{fn.__qualname__}"
    return request


def request_cache(
    cache_arg_name: str | None = None,
    ignored_args_for_cache_key: Sequence[str] | None = None,
    enable_memory_cache: bool = True,
    *,
    maxsize: int | None = None,
) -> Callable[[F], F]:
    """Cache a function's results in ``dspex.cache`` (read at each call, so a new cache applies at
    once). ``ignored_args_for_cache_key`` defaults to the API key, base and URL; with
    ``enable_memory_cache=False`` new results go to disk only. ``maxsize`` is accepted and unused
    (DSPy deprecated it: the cache's own limits apply)."""
    ignored = list(ignored_args_for_cache_key or _NEVER_IN_KEY)
    if maxsize is not None:
        logger.warning("request_cache(maxsize=...) does nothing: dspex.cache's own limits apply")

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                cache = _current()
                request = _request(fn, cache_arg_name, args, kwargs)
                found = cache.get(request, ignored)
                if found is not None:
                    return found
                result = await fn(*args, **kwargs)
                cache.put(request, result, ignored, enable_memory_cache)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache = _current()
            request = _request(fn, cache_arg_name, args, kwargs)
            found = cache.get(request, ignored)
            if found is not None:
                return found
            result = fn(*args, **kwargs)
            cache.put(request, result, ignored, enable_memory_cache)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _current() -> Any:
    from dspex.lm.cache import global_cache

    return global_cache()

"""Several samples of one prompt as one LM call: a predictor's ``n`` completions.

DSPy sends one request with ``n``; dspex sends one request per sample (each with its own
``rollout_id``, so each is cached, retried and billed on its own, and providers without ``n`` work
too). To the callbacks it is still the one call the program made: one ``on_lm_start`` whose inputs
carry ``n``, one ``on_lm_end`` with every sample's text. Each request has its own line in the LM
history and its own ``on_lm_attempt`` / ``on_lm_request`` events, as any request does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dspex.lm.base import _complete, record_call

if TYPE_CHECKING:
    from dspex.lm.base import BaseLM
    from dspex.lm.client import LMResponse

__all__ = ["call_lm_samples"]


async def call_lm_samples(
    lm: BaseLM,
    messages: Sequence[Mapping[str, Any]],
    requests: Sequence[Mapping[str, Any]],
    announced: Mapping[str, Any],
) -> list[LMResponse]:
    """One answer per request (in order), all of ``messages``, heard by the callbacks as one call
    whose inputs are ``messages`` and ``announced`` (the request as the program made it, ``n`` in it)."""
    from dspex.utils.callback import ACTIVE_CALL_ID, active_callbacks, listening, notify_end, notify_start

    callbacks = listening(active_callbacks(lm), "lm")
    if not callbacks:
        return await _all(lm, messages, requests)
    call_id = notify_start(callbacks, "lm", lm, {"messages": list(messages), **announced})
    token = ACTIVE_CALL_ID.set(call_id)
    try:
        responses = await _all(lm, messages, requests)
    except BaseException as exc:
        notify_end(callbacks, "lm", call_id, None, exc)
        raise
    finally:
        ACTIVE_CALL_ID.reset(token)
    notify_end(callbacks, "lm", call_id, [response.text for response in responses], None)
    return responses


async def _all(
    lm: BaseLM, messages: Sequence[Mapping[str, Any]], requests: Sequence[Mapping[str, Any]]
) -> list[LMResponse]:
    return list(await asyncio.gather(*(_one(lm, messages, request) for request in requests)))


async def _one(lm: BaseLM, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]) -> LMResponse:
    response = await _complete(lm, messages, request)
    record_call(lm, messages, response, request)
    return response

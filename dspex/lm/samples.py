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

from dspex.lm.base import _complete, announced_lm_call, record_call

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
    return await announced_lm_call(
        lm,
        lambda: {"messages": list(messages), **announced},
        lambda: _all(lm, messages, requests),
        _texts,
    )


def _texts(responses: list[LMResponse]) -> list[str]:
    return [response.text for response in responses]


async def _all(
    lm: BaseLM, messages: Sequence[Mapping[str, Any]], requests: Sequence[Mapping[str, Any]]
) -> list[LMResponse]:
    return list(await asyncio.gather(*(_one(lm, messages, request) for request in requests)))


async def _one(lm: BaseLM, messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any]) -> LMResponse:
    response = await _complete(lm, messages, request)
    record_call(lm, messages, response, request)
    return response

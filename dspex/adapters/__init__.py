"""Adapters: how a signature, demos and inputs become chat messages, and LM text becomes typed outputs.

    from dspex.adapters import ChatAdapter
    messages = ChatAdapter().format(signature, demos, inputs)      # DSPy 3.4.1's exact messages
    result = await ChatAdapter().acall(lm, signature, demos, inputs, config={})
    result.outputs, result.response, result.adapter

:class:`ChatAdapter` speaks DSPy's ``[[ ## field ## ]]`` format and falls back once to
:class:`JSONAdapter`, which asks for a JSON object with ``response_format``.
"""

from __future__ import annotations

from dspex.adapters.base import Adapter
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json_adapter import JSONAdapter
from dspex.adapters.types import AdapterResult

__all__ = ["Adapter", "AdapterResult", "ChatAdapter", "JSONAdapter"]

"""Adapters: how a signature, demos and inputs become chat messages, and LM text becomes typed outputs.

    from dspex.adapters import ChatAdapter
    messages = ChatAdapter().format(signature, demos, inputs)               # DSPy 3.4.1's exact messages
    outputs = ChatAdapter()(lm, {}, signature, demos, inputs)               # DSPy's call: [{"answer": ...}]
    result = await ChatAdapter().acall_result(lm, signature, demos, inputs, config={})   # dspex's hot path
    result.outputs, result.response, result.adapter

:class:`ChatAdapter` speaks DSPy's ``[[ ## field ## ]]`` format and falls back once to
:class:`JSONAdapter`, which asks for a JSON object with ``response_format``. :class:`XMLAdapter`
wraps fields in XML tags; :class:`TwoStepAdapter` lets a main LM answer freely and a second LM
extract the fields.
"""

from __future__ import annotations

from dspex.adapters.baml_adapter import BAMLAdapter
from dspex.adapters.base import Adapter
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json_adapter import JSONAdapter
from dspex.adapters.two_step_adapter import TwoStepAdapter
from dspex.adapters.types import AdapterResult
from dspex.adapters.xml_adapter import XMLAdapter

__all__ = [
    "Adapter",
    "AdapterResult",
    "BAMLAdapter",
    "ChatAdapter",
    "JSONAdapter",
    "TwoStepAdapter",
    "XMLAdapter",
]

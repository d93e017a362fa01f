"""Values adapters hand back, and (as DSPy's ``dspy.adapters.types``) the special field types.

``AdapterResult`` is what :meth:`~dspex.adapters.Adapter.acall_result` returns on the hot path.
The special types (tools, images, history...) live in modules of this package as they are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex.adapters.types._fetch import media_fetches
from dspex.adapters.types.audio import Audio
from dspex.adapters.types.base_type import Type
from dspex.adapters.types.citation import Citations
from dspex.adapters.types.code import Code
from dspex.adapters.types.document import Document
from dspex.adapters.types.file import File
from dspex.adapters.types.history import History
from dspex.adapters.types.image import Image
from dspex.adapters.types.reasoning import Reasoning
from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls

if TYPE_CHECKING:  # the LM client is only a type here; adapters never import it at runtime
    from dspex.lm import LMResponse

__all__ = [
    "AdapterResult",
    "Audio",
    "Citations",
    "Code",
    "Document",
    "File",
    "History",
    "Image",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
    "media_fetches",
]


@dataclass(frozen=True)
class AdapterResult:
    """One adapter call: the parsed outputs, the LM response they came from, and which adapter parsed them.

    ``adapter`` is the adapter's ``name`` (``"chat"``, ``"json"``, ``"xml"``, ``"two_step"``); it is
    ``"json"`` after ChatAdapter fell back to JSON.
    """

    outputs: dict[str, Any]
    response: LMResponse
    adapter: str

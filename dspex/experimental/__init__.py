"""Experimental types, as DSPy's ``dspy.experimental``: their behaviour may still change.

from dspex.experimental import Citations, Document
"""

from __future__ import annotations

from dspex.adapters.types.citation import Citations
from dspex.adapters.types.document import Document

__all__ = ["Citations", "Document"]

"""DSPy's ``dspy.utils.saving`` path: ``load`` (a program saved with ``save_program=True``, or any
file ``module.save`` writes) and ``get_dependency_versions`` (the versions a saved file records)."""

from __future__ import annotations

from dspex._dspy_state import dependency_versions as get_dependency_versions
from dspex.primitives.saving import load

__all__ = ["get_dependency_versions", "load"]

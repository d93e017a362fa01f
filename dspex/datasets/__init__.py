"""DSPy's ``dspy.datasets``: the ``Dataset`` base class for train/dev/test splits.

DSPy's ready-made datasets (``HotPotQA``, ``MATH``, ``Colors``, ``AlfWorld``) and its ``DataLoader``
are not here (see docs/compat.md); build ``Example`` lists, or subclass :class:`Dataset`.
"""

from __future__ import annotations

from dspex.datasets.dataset import Dataset

__all__ = ["Dataset"]

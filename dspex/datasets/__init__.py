"""DSPy's ``dspy.datasets``: the ``Dataset`` base class for train/dev/test splits, and ``DataLoader``
(examples from CSV, JSON, Parquet, pandas or the Hugging Face Hub).

DSPy's ready-made datasets (``HotPotQA``, ``MATH``, ``Colors``, ``AlfWorld``) are not here (see
docs/compat.md); build ``Example`` lists, load them with ``DataLoader``, or subclass :class:`Dataset`.
"""

from __future__ import annotations

from dspex.datasets.dataloader import DataLoader
from dspex.datasets.dataset import Dataset

__all__ = ["DataLoader", "Dataset"]

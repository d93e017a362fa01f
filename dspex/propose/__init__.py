"""DSPy's ``dspy.propose``: instruction proposers, over dspex's own (:mod:`dspex.optimizers.grounded`)."""

from __future__ import annotations

from dspex.propose.grounded_proposer import GroundedProposer

__all__ = ["GroundedProposer"]

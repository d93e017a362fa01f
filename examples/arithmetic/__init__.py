"""Arithmetic QA on the simulated LM."""

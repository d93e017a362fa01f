"""The public API is exactly what dspex/__init__.py means to export, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import dspex

EXPECTED_PROGRAMMING_MODEL = {
    "Signature", "InputField", "OutputField", "make_signature", "Example", "Prediction", "Module",
    "Predict", "ChainOfThought", "ChatAdapter", "JSONAdapter", "LM", "Usage", "track_usage",
    "register_prices", "configure", "context", "Evaluate", "EvaluationResult", "load", "candidate_id",
}  # fmt: skip


def test_every_exported_name_resolves() -> None:
    for name in dspex.__all__:
        assert getattr(dspex, name) is not None, name


def test_programming_model_names_are_exported() -> None:
    assert set(dspex.__all__) >= EXPECTED_PROGRAMMING_MODEL


def test_errors_exported_are_the_whole_tree() -> None:
    import dspex.errors as errors

    assert set(errors.__all__) <= set(dspex.__all__)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.DspexError)


def test_import_dspex_does_not_import_kafka_clients() -> None:
    code = (
        "import sys, dspex\n"
        "dspex.Predict, dspex.LM, dspex.Evaluate\n"
        "bad = [m for m in ('confluent_kafka', 'faust', 'aiokafka') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

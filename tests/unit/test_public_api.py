"""The public API is exactly what dspex/__init__.py means to export, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import dspex

EXPECTED_PROGRAMMING_MODEL = {
    "Signature", "InputField", "OutputField", "make_signature", "ensure_signature", "infer_prefix",
    "Example", "Prediction", "Completions", "Module", "BaseModule",
    "Predict", "ChainOfThought", "ReAct", "MultiChainComparison", "BestOfN", "Refine", "Parallel",
    "majority", "Adapter", "ChatAdapter", "JSONAdapter", "XMLAdapter", "TwoStepAdapter", "BAMLAdapter",
    "Type", "Image", "Audio", "File", "History", "Reasoning", "Code", "Tool", "ToolCalls",
    "ToolCallResults", "LM", "BaseLM", "DummyLM", "Embedder", "Usage", "track_usage", "register_prices",
    "configure", "context", "settings", "configure_cache", "inspect_history", "BaseCallback",
    "asyncify", "syncify", "enable_logging", "disable_logging", "configure_dspy_loggers",
    "enable_litellm_logging", "disable_litellm_logging", "bootstrap_trace_data", "SignatureMeta",
    "Evaluate", "EvaluationResult", "load", "candidate_id",
    "ReActV2", "ProgramOfThought", "CodeAct", "RLM", "CodeInterpreter", "CodeInterpreterError",
    "CodeExecutionError", "FinalOutput", "PythonInterpreter", "LocalInterpreter", "SandboxSerializable",
    "resolve_interpreter_factory", "streamify", "Provider", "TrainingJob", "is_retryable_lm_error",
    "load_settings", "cache", "ColBERTv2", "Embeddings", "EmbeddingsWithScores", "Retrieve",
}  # fmt: skip
EXPECTED_OPTIMIZERS = {
    "Teleprompter", "LabeledFewShot", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch",
    "BootstrapRS", "KNNFewShot", "KNN", "Ensemble", "COPRO", "SIMBA", "MIPROv2", "BetterTogether",
    "BootstrapFinetune", "LocalExecutor", "GEPA", "GRPO", "InferRules",
    "BootstrapFewShotWithOptuna",
}  # fmt: skip
# dspex's own subpackages, and DSPy's (dspex.teleprompt, dspex.predict...) that DSPy code reaches
EXPECTED_SUBMODULES = {
    "metrics", "testing", "schemas", "streams", "utils", "evaluate", "primitives", "adapters",
    "predict", "teleprompt", "signatures", "clients", "experimental", "streaming", "dsp",
}  # fmt: skip


def test_the_export_list_is_exactly_what_is_meant() -> None:
    import dspex.errors as errors

    expected = (
        EXPECTED_PROGRAMMING_MODEL
        | EXPECTED_OPTIMIZERS
        | EXPECTED_SUBMODULES
        | set(errors.__all__)
        | {"Client", "TracingSettings", "MlflowSettings", "__version__"}
    )
    exported = set(dspex.__all__)
    assert exported == expected, {"unexpected": exported - expected, "missing": expected - exported}
    assert len(dspex.__all__) == len(exported)  # no name listed twice


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

"""dspex: DSPy's programming model on an execution layer that scales out on Kafka.

    import dspex
    lm = dspex.LM("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    dspex.configure(lm=lm)
    qa = dspex.ChainOfThought("question -> answer")
    print(qa(question="What is 2 + 3?").answer)

Public names are imported lazily, on first use, so that ``import dspex`` stays cheap and never
imports the Kafka clients: the programming model runs with no broker installed or reachable.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex import _dspy_paths
from dspex import errors as _errors

_dspy_paths.install()  # DSPy's import paths (dspex.teleprompt, dspex.predict.predict...) resolve

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # programming model
    "Signature": "dspex.signatures",
    "InputField": "dspex.signatures",
    "OutputField": "dspex.signatures",
    "make_signature": "dspex.signatures",
    "infer_prefix": "dspex.signatures",
    "ensure_signature": "dspex.signatures",
    "Example": "dspex.primitives",
    "Prediction": "dspex.primitives",
    "Completions": "dspex.primitives.prediction",
    "Module": "dspex.primitives",
    "Predict": "dspex.modules",
    "ChainOfThought": "dspex.modules",
    "ReAct": "dspex.modules",
    "ReActV2": "dspex.modules",
    "ProgramOfThought": "dspex.modules",
    "CodeAct": "dspex.modules",
    "MultiChainComparison": "dspex.modules",
    "BestOfN": "dspex.modules",
    "Refine": "dspex.modules",
    "RLM": "dspex.modules",
    "CodeInterpreter": "dspex.primitives",
    "CodeInterpreterError": "dspex.primitives",
    "CodeExecutionError": "dspex.primitives",
    "FinalOutput": "dspex.primitives",
    "PythonInterpreter": "dspex.primitives",
    "SandboxSerializable": "dspex.primitives",
    "resolve_interpreter_factory": "dspex.primitives",
    "Parallel": "dspex.modules",
    "majority": "dspex.modules",
    "ChatAdapter": "dspex.adapters",
    "JSONAdapter": "dspex.adapters",
    "XMLAdapter": "dspex.adapters",
    "BAMLAdapter": "dspex.adapters",
    "TwoStepAdapter": "dspex.adapters",
    "Adapter": "dspex.adapters",
    "Type": "dspex.adapters.types",
    "Image": "dspex.adapters.types",
    "Audio": "dspex.adapters.types",
    "File": "dspex.adapters.types",
    "History": "dspex.adapters.types",
    "Reasoning": "dspex.adapters.types",
    "Code": "dspex.adapters.types",
    "Tool": "dspex.adapters.types",
    "ToolCalls": "dspex.adapters.types",
    "ToolCallResults": "dspex.adapters.types",
    "LM": "dspex.lm",
    "Usage": "dspex.lm",
    "track_usage": "dspex.lm",
    "register_prices": "dspex.lm",
    "configure": "dspex.configuration",
    "context": "dspex.configuration",
    "settings": "dspex.configuration",
    "BaseLM": "dspex.lm",
    "DummyLM": "dspex.utils",
    "inspect_history": "dspex.lm.history",
    "configure_cache": "dspex.lm.cache",
    "asyncify": "dspex.utils.asyncify",
    "syncify": "dspex.utils.asyncify",
    "enable_logging": "dspex.utils",
    "disable_logging": "dspex.utils",
    "BetterTogether": "dspex.optimizers",
    "GEPA": "dspex.optimizers",
    "BootstrapFinetune": "dspex.optimizers",
    "BootstrapRS": "dspex.optimizers",
    "BaseModule": "dspex.primitives",
    "BaseCallback": "dspex.utils.callback",
    "Evaluate": "dspex.evaluate",
    "Embedder": "dspex.lm.embedder",
    "Teleprompter": "dspex.optimizers",
    "LabeledFewShot": "dspex.optimizers",
    "BootstrapFewShot": "dspex.optimizers",
    "BootstrapFewShotWithRandomSearch": "dspex.optimizers",
    "KNNFewShot": "dspex.optimizers",
    "KNN": "dspex.optimizers",
    "Ensemble": "dspex.optimizers",
    "COPRO": "dspex.optimizers",
    "SIMBA": "dspex.optimizers",
    "LocalExecutor": "dspex.optimizers",
    "MIPROv2": "dspex.optimizers",
    "EvaluationResult": "dspex.evaluate",
    "load": "dspex.serialization",
    "candidate_id": "dspex.serialization",
    "streamify": "dspex.streaming",
    # the Kafka client: imports confluent-kafka only when first used
    "Client": "dspex.client",
}

# the whole exception tree, so that `except dspex.LMRateLimitError` works (errors.py is cheap)
_EXPORTS.update(dict.fromkeys(_errors.__all__, "dspex.errors"))

# submodules reachable as attributes, e.g. dspex.metrics.exact_match("answer")
# DSPy's subpackages too (dspy.teleprompt, dspy.predict...), through dspex._dspy_paths where renamed
_SUBMODULES = frozenset(
    {
        "metrics", "testing", "schemas", "streams", "utils", "evaluate", "primitives",
        "adapters", "predict", "teleprompt", "signatures", "clients", "experimental", "streaming",
    }
)  # fmt: skip

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"dspex.{name}")
    elif name in _EXPORTS:
        module = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'dspex' has no attribute {name!r}")
    globals()[name] = module  # cache: the next lookup does not come here
    return module


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dspex import (
        adapters,
        clients,
        evaluate,
        experimental,
        metrics,
        predict,
        primitives,
        schemas,
        signatures,
        streaming,
        streams,
        teleprompt,
        testing,
        utils,
    )
    from dspex.adapters import (
        Adapter,
        BAMLAdapter,
        ChatAdapter,
        JSONAdapter,
        TwoStepAdapter,
        XMLAdapter,
    )
    from dspex.adapters.types import (
        Audio,
        Code,
        File,
        History,
        Image,
        Reasoning,
        Tool,
        ToolCallResults,
        ToolCalls,
        Type,
    )
    from dspex.client import (
        Client,
    )
    from dspex.configuration import (
        configure,
        context,
        settings,
    )
    from dspex.errors import (
        AdapterParseError,
        BrokerAuthenticationError,
        BrokerUnavailableError,
        ConfigurationError,
        ContextWindowExceededError,
        DevBrokerError,
        DspexError,
        DSPyError,
        InputError,
        JobError,
        KafkaError,
        LMAuthenticationError,
        LMAuthError,
        LMConnectionError,
        LMError,
        LMInvalidRequestError,
        LMNotFoundError,
        LMProviderError,
        LMRateLimitError,
        LMRequestError,
        LMServerError,
        LMTimeoutError,
        LMTransportError,
        LMUnexpectedError,
        LMUnsupportedModelError,
        MetricError,
        OptimizerError,
        PoisonMessageError,
        ProgramLoadError,
        SchemaError,
        SecurityPolicyError,
        SignatureError,
        TopicError,
    )
    from dspex.evaluate import (
        Evaluate,
        EvaluationResult,
    )
    from dspex.lm import (
        LM,
        BaseLM,
        Usage,
        register_prices,
        track_usage,
    )
    from dspex.lm.cache import (
        configure_cache,
    )
    from dspex.lm.embedder import (
        Embedder,
    )
    from dspex.lm.history import (
        inspect_history,
    )
    from dspex.modules import (
        RLM,
        BestOfN,
        ChainOfThought,
        CodeAct,
        MultiChainComparison,
        Parallel,
        Predict,
        ProgramOfThought,
        ReAct,
        ReActV2,
        Refine,
        majority,
    )
    from dspex.optimizers import (
        COPRO,
        GEPA,
        KNN,
        SIMBA,
        BetterTogether,
        BootstrapFewShot,
        BootstrapFewShotWithRandomSearch,
        BootstrapFinetune,
        BootstrapRS,
        Ensemble,
        KNNFewShot,
        LabeledFewShot,
        LocalExecutor,
        MIPROv2,
        Teleprompter,
    )
    from dspex.primitives import (
        BaseModule,
        CodeExecutionError,
        CodeInterpreter,
        CodeInterpreterError,
        Example,
        FinalOutput,
        Module,
        Prediction,
        PythonInterpreter,
        SandboxSerializable,
        resolve_interpreter_factory,
    )
    from dspex.primitives.prediction import (
        Completions,
    )
    from dspex.serialization import (
        candidate_id,
        load,
    )
    from dspex.signatures import (
        InputField,
        OutputField,
        Signature,
        ensure_signature,
        infer_prefix,
        make_signature,
    )
    from dspex.streaming.streamify import streamify
    from dspex.utils import (
        DummyLM,
        disable_logging,
        enable_logging,
    )
    from dspex.utils.asyncify import asyncify, syncify
    from dspex.utils.callback import (
        BaseCallback,
    )

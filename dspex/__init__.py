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
    "LocalInterpreter": "dspex.primitives",
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
    "load_settings": "dspex._settings_file",
    "BaseLM": "dspex.lm",
    "Provider": "dspex.lm.finetune",
    "TrainingJob": "dspex.lm.finetune",
    "DummyLM": "dspex.utils",
    "inspect_history": "dspex.lm.history",
    "configure_cache": "dspex.lm.cache",
    "cache": "dspex.lm.cache",  # the process's Cache (DSPy's dspy.cache), built on first use
    "asyncify": "dspex.utils.asyncify",
    "syncify": "dspex.utils.asyncify",
    "enable_logging": "dspex.utils",
    "disable_logging": "dspex.utils",
    "configure_dspy_loggers": "dspex.utils",
    "enable_litellm_logging": "dspex.utils",
    "disable_litellm_logging": "dspex.utils",
    "bootstrap_trace_data": "dspex.optimizers.bootstrap_trace",
    "SignatureMeta": "dspex.signatures",
    "BetterTogether": "dspex.optimizers",
    "GEPA": "dspex.optimizers",
    "GRPO": "dspex.optimizers",
    "InferRules": "dspex.optimizers",
    "BootstrapFewShotWithOptuna": "dspex.optimizers",
    "BootstrapFinetune": "dspex.optimizers",
    "BootstrapRS": "dspex.optimizers",
    "BaseModule": "dspex.primitives",
    "BaseCallback": "dspex.utils.callback",
    "TracingSettings": "dspex.observability.tracing",
    "MlflowSettings": "dspex.tracking",
    "Evaluate": "dspex.evaluate",
    "Embedder": "dspex.lm.embedder",
    "ColBERTv2": "dspex.retrievers",
    "Embeddings": "dspex.retrievers",
    "EmbeddingsWithScores": "dspex.retrievers",
    "Retrieve": "dspex.retrievers",
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
    "load": "dspex.primitives.saving",
    "candidate_id": "dspex.serialization",
    "streamify": "dspex.streaming",
    "is_retryable_lm_error": "dspex.errors",  # DSPy exports it beside its LM errors
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
        "dsp",
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
        adapters as adapters,
        evaluate as evaluate,
        experimental as experimental,
        metrics as metrics,
        primitives as primitives,
        schemas as schemas,
        signatures as signatures,
        streaming as streaming,
        streams as streams,
        testing as testing,
        utils as utils,
    )

    # DSPy's names for these packages (see dspex._dspy_paths)
    import dspex.lm as clients
    import dspex.modules as predict
    import dspex.optimizers as teleprompt
    from dspex.adapters import (
        Adapter as Adapter,
        BAMLAdapter as BAMLAdapter,
        ChatAdapter as ChatAdapter,
        JSONAdapter as JSONAdapter,
        TwoStepAdapter as TwoStepAdapter,
        XMLAdapter as XMLAdapter,
    )
    from dspex.adapters.types import (
        Audio as Audio,
        Code as Code,
        File as File,
        History as History,
        Image as Image,
        Reasoning as Reasoning,
        Tool as Tool,
        ToolCallResults as ToolCallResults,
        ToolCalls as ToolCalls,
        Type as Type,
    )
    from dspex.client import (
        Client as Client,
    )
    from dspex.configuration import (
        configure as configure,
        context as context,
        settings as settings,
    )
    from dspex._settings_file import load_settings as load_settings
    from dspex.errors import (
        AdapterParseError as AdapterParseError,
        BrokerAuthenticationError as BrokerAuthenticationError,
        BrokerUnavailableError as BrokerUnavailableError,
        ConfigurationError as ConfigurationError,
        ContextWindowExceededError as ContextWindowExceededError,
        DevBrokerError as DevBrokerError,
        DspexError as DspexError,
        DSPyError as DSPyError,
        InputError as InputError,
        JobError as JobError,
        KafkaError as KafkaError,
        LMAuthenticationError as LMAuthenticationError,
        LMAuthError as LMAuthError,
        LMBillingError as LMBillingError,
        LMCollectionLimitError as LMCollectionLimitError,
        LMConfigurationError as LMConfigurationError,
        LMConnectionError as LMConnectionError,
        LMError as LMError,
        LMInvalidRequestError as LMInvalidRequestError,
        LMLockTimeoutError as LMLockTimeoutError,
        LMNotConfiguredError as LMNotConfiguredError,
        LMNotFoundError as LMNotFoundError,
        LMProviderError as LMProviderError,
        LMRateLimitError as LMRateLimitError,
        LMRequestError as LMRequestError,
        LMServerError as LMServerError,
        LMStreamAssemblyError as LMStreamAssemblyError,
        LMTimeoutError as LMTimeoutError,
        LMTransportError as LMTransportError,
        LMUnexpectedError as LMUnexpectedError,
        LMUnsupportedFeatureError as LMUnsupportedFeatureError,
        LMUnsupportedModelError as LMUnsupportedModelError,
        MetricError as MetricError,
        RetrievalError as RetrievalError,
        OptimizerError as OptimizerError,
        PoisonMessageError as PoisonMessageError,
        ProgramLoadError as ProgramLoadError,
        SchemaError as SchemaError,
        SecurityPolicyError as SecurityPolicyError,
        SignatureError as SignatureError,
        TopicError as TopicError,
    )
    from dspex.evaluate import (
        Evaluate as Evaluate,
        EvaluationResult as EvaluationResult,
    )
    from dspex.lm import (
        LM as LM,
        BaseLM as BaseLM,
        Usage as Usage,
        register_prices as register_prices,
        track_usage as track_usage,
    )
    from dspex.lm.cache import (
        configure_cache as configure_cache,
    )
    from dspex.lm.finetune import (
        Provider as Provider,
        TrainingJob as TrainingJob,
    )
    from dspex.retrievers import (
        ColBERTv2 as ColBERTv2,
        Embeddings as Embeddings,
        EmbeddingsWithScores as EmbeddingsWithScores,
        Retrieve as Retrieve,
    )
    from dspex.lm.embedder import (
        Embedder as Embedder,
    )
    from dspex.lm.history import (
        inspect_history as inspect_history,
    )
    from dspex.modules import (
        RLM as RLM,
        BestOfN as BestOfN,
        ChainOfThought as ChainOfThought,
        CodeAct as CodeAct,
        MultiChainComparison as MultiChainComparison,
        Parallel as Parallel,
        Predict as Predict,
        ProgramOfThought as ProgramOfThought,
        ReAct as ReAct,
        ReActV2 as ReActV2,
        Refine as Refine,
        majority as majority,
    )
    from dspex.optimizers import (
        COPRO as COPRO,
        GEPA as GEPA,
        GRPO as GRPO,
        InferRules as InferRules,
        BootstrapFewShotWithOptuna as BootstrapFewShotWithOptuna,
        KNN as KNN,
        SIMBA as SIMBA,
        BetterTogether as BetterTogether,
        BootstrapFewShot as BootstrapFewShot,
        BootstrapFewShotWithRandomSearch as BootstrapFewShotWithRandomSearch,
        BootstrapFinetune as BootstrapFinetune,
        BootstrapRS as BootstrapRS,
        Ensemble as Ensemble,
        KNNFewShot as KNNFewShot,
        LabeledFewShot as LabeledFewShot,
        LocalExecutor as LocalExecutor,
        MIPROv2 as MIPROv2,
        Teleprompter as Teleprompter,
    )
    from dspex.primitives import (
        BaseModule as BaseModule,
        CodeExecutionError as CodeExecutionError,
        CodeInterpreter as CodeInterpreter,
        CodeInterpreterError as CodeInterpreterError,
        Example as Example,
        FinalOutput as FinalOutput,
        Module as Module,
        Prediction as Prediction,
        LocalInterpreter as LocalInterpreter,
        PythonInterpreter as PythonInterpreter,
        SandboxSerializable as SandboxSerializable,
        resolve_interpreter_factory as resolve_interpreter_factory,
    )
    from dspex.primitives.prediction import (
        Completions as Completions,
    )
    from dspex.primitives.saving import load as load
    from dspex.serialization import candidate_id as candidate_id
    from dspex.signatures import (
        InputField as InputField,
        OutputField as OutputField,
        Signature as Signature,
        ensure_signature as ensure_signature,
        infer_prefix as infer_prefix,
        make_signature as make_signature,
    )
    from dspex.errors import is_retryable_lm_error as is_retryable_lm_error
    from dspex.streaming.streamify import streamify as streamify
    from dspex.optimizers.bootstrap_trace import bootstrap_trace_data as bootstrap_trace_data
    from dspex.signatures import SignatureMeta as SignatureMeta
    from dspex.utils import (
        DummyLM as DummyLM,
        configure_dspy_loggers as configure_dspy_loggers,
        disable_litellm_logging as disable_litellm_logging,
        disable_logging as disable_logging,
        enable_litellm_logging as enable_litellm_logging,
        enable_logging as enable_logging,
    )
    from dspex.utils.asyncify import asyncify as asyncify
    from dspex.utils.asyncify import syncify as syncify
    from dspex.observability.tracing import TracingSettings as TracingSettings
    from dspex.tracking import MlflowSettings as MlflowSettings
    from dspex.utils.callback import (
        BaseCallback as BaseCallback,
    )

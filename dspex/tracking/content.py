"""What an MLflow run of dspex holds: params, metrics, tags and artifacts of an evaluation or an
optimization, built from dspex's own results (no I/O here).

Secrets never get in: params come from an allow-list of plain values, secret-named keys are dropped
from every mapping, and the value of every API key the run's LMs use is replaced wherever it occurs
in an artifact's text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final

from dspex.observability.tracing.attributes import redacted_mapping, scrub, secret_key

__all__ = [
    "MetricPoint",
    "RunContent",
    "dataset_fingerprint",
    "evaluation_content",
    "optimization_content",
    "program_text",
    "saved_evaluation_content",
    "saved_program_name",
    "step_metrics",
    "usage_metrics",
]

logger = logging.getLogger("dspex.tracking")

SOURCE_TAG: Final = "dspex"
# MLflow's limits on a param's value and key (its server refuses longer ones)
MAX_PARAM_CHARS: Final = 6000
MAX_PARAM_KEY_CHARS: Final = 250
_PLAIN: Final = (str, int, float, bool)


@dataclass(frozen=True)
class MetricPoint:
    """One metric value: ``key`` at ``step`` (0 for a single value), at ``timestamp_ms`` (0: when
    it is sent)."""

    key: str
    value: float
    step: int = 0
    timestamp_ms: int = 0


@dataclass
class RunContent:
    """One run's worth of logging: what :meth:`MlflowLogger.log` sends."""

    kind: str  # "evaluation" or "optimization"
    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricPoint] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    failed: bool = False


# --------------------------------------------------------------------------- evaluations


def evaluation_content(
    program: Any,
    devset: Sequence[Any],
    result: Any,
    *,
    settings_lm: Any = None,
    job_id: str | None = None,
    seed: int | None = None,
) -> RunContent:
    """A local evaluation's run: ``result`` (an EvaluationResult) of ``program`` over ``devset``."""
    lms = _lms(program, settings_lm)
    described = _Program(
        name=type(program).__name__,
        program_id=_program_id(program),
        data=_program_json(program),
        models=sorted({str(lm.model) for lm in lms if getattr(lm, "model", None)}),
    )
    return _evaluation(described, devset, result, _secrets(lms), job_id=job_id, seed=seed)


def saved_evaluation_content(
    program: Mapping[str, Any],
    program_id: str,
    devset: Sequence[Any],
    result: Any,
    *,
    job_lm: Any = None,
    settings_lm: Any = None,
    job_id: str | None = None,
) -> RunContent:
    """A cluster evaluation's run: ``program`` is the program's saved JSON (as the job carried it),
    ``job_lm`` the job's LM settings (an LMSpec, or None)."""
    models = set(_models_in(program))
    if job_lm is not None and getattr(job_lm, "model", None):
        models.add(str(job_lm.model))
    described = _Program(
        name=saved_program_name(program),
        program_id=program_id,
        data=dict(program),
        models=sorted(models),
    )
    key_holders = [lm for lm in (settings_lm, job_lm) if lm is not None]
    key_holders += [SimpleNamespace(api_key_env=env) for env in _key_envs_in(program)]
    return _evaluation(described, devset, result, _secrets(key_holders), job_id=job_id, seed=None)


def saved_program_name(program: Mapping[str, Any]) -> str:
    """The class name of a saved program (its ``type``, without module)."""
    return str(program.get("type", "program")).rpartition(".")[2].rpartition(":")[2]


def _key_envs_in(data: Any) -> Iterable[str]:
    """The key variables the LMs of a saved program read (their values are scrubbed)."""
    if isinstance(data, Mapping):
        env = data.get("api_key_env")
        if isinstance(env, str):
            yield env
        for value in data.values():
            yield from _key_envs_in(value)
    elif isinstance(data, list):
        for item in data:
            yield from _key_envs_in(item)


@dataclass(frozen=True)
class _Program:
    name: str
    program_id: str | None
    data: dict[str, Any] | None
    models: list[str]


def _evaluation(
    program: _Program,
    devset: Sequence[Any],
    result: Any,
    secrets: Sequence[str],
    *,
    job_id: str | None,
    seed: int | None,
) -> RunContent:
    usage = result.usage
    params: dict[str, Any] = {
        "kind": "evaluation",
        "program": program.name,
        "program_id": program.program_id,
        "model": ",".join(program.models) or None,
        "metric": result.metric,
        "dataset_fingerprint": dataset_fingerprint(devset),
        "num_examples": len(devset),
        "seed": seed,
        "job_id": job_id,
    }
    metrics = {
        "score": result.score,
        "cost_usd": usage.cost_usd,
        "total_tokens": usage.total_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "lm_calls": usage.lm_calls,
        "errors": result.errors,
        "processed": result.processed,
        "elapsed_s": result.elapsed_s,
        "examples_per_s": result.examples_per_s,
    }
    artifacts = {"results.json": _json_bytes(_results_table(result), secrets)}
    if program.data is not None:
        artifacts["program.json"] = _json_bytes(program.data, secrets)
    return RunContent(
        kind="evaluation",
        name=f"{program.name} eval",
        params=_params(params),
        metrics=[MetricPoint(key, float(value)) for key, value in metrics.items()],
        tags={"dspex.kind": "evaluation", "mlflow.source.name": SOURCE_TAG},
        artifacts=artifacts,
    )


def _models_in(data: Any) -> Iterable[str]:
    """The ``model`` of every LM a saved program names (its predictors' ``lm`` entries)."""
    if isinstance(data, Mapping):
        lm = data.get("lm")
        if isinstance(lm, Mapping) and isinstance(lm.get("model"), str):
            yield lm["model"]
        for value in data.values():
            if isinstance(value, Mapping | list):
                yield from _models_in(value)
    elif isinstance(data, list):
        for item in data:
            yield from _models_in(item)


def _results_table(result: Any) -> dict[str, Any]:
    summary = result.to_dict()
    rows = summary.pop("results")
    return {"summary": summary, "results": rows}


def dataset_fingerprint(devset: Iterable[Any]) -> str:
    """A hash of the examples (their fields and which are inputs), in order: the same data gives
    the same fingerprint in any process."""
    digest = hashlib.sha256()
    for example in devset:
        digest.update(_canonical(_example_data(example)).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def _example_data(example: Any) -> Any:
    to_dict = getattr(example, "to_dict", None) or getattr(example, "toDict", None)
    fields = to_dict() if callable(to_dict) else example
    inputs = getattr(example, "input_keys", None)
    return {"fields": fields, "inputs": sorted(inputs) if inputs else None}


# --------------------------------------------------------------------------- optimizations


@dataclass(frozen=True)
class Step:
    """One trial of an optimization as logged: ``step`` is its place in the history (MLflow's
    step), ``optimizer_step`` the optimizer's own round (several trials may share one)."""

    step: int
    score: float | None
    num_examples: int = 0
    kind: str = "full"
    best_so_far: float | None = None
    optimizer_step: int | None = None


def optimization_content(
    optimizer: str,
    knobs: Mapping[str, Any],
    steps: Sequence[Step],
    best: Any,
    *,
    seed: int | None = None,
    usage: Any = None,
    trainset: Sequence[Any] | None = None,
    job_id: str | None = None,
    settings_lm: Any = None,
    failed: bool = False,
) -> RunContent:
    """An optimization's run: ``knobs`` as params, each of ``steps`` as a step of the ``score``
    (and ``best_score``) metric, ``best`` (the best program, if any) as artifacts."""
    lms = _lms(best, settings_lm) if best is not None else _lms(None, settings_lm)
    secrets = _secrets(lms)
    params: dict[str, Any] = {
        "kind": "optimization",
        "optimizer": optimizer,
        "seed": seed,
        "job_id": job_id,
        "num_trials": len(steps),
    }
    if trainset is not None:
        params["dataset_fingerprint"] = dataset_fingerprint(trainset)
        params["num_examples"] = len(trainset)
    params.update({f"knob.{name}": value for name, value in _plain_knobs(knobs).items()})
    metrics = step_metrics(steps)
    scores = [step.score for step in steps if step.score is not None]
    if scores:
        metrics.append(MetricPoint("best_score", max(scores), step=max(len(steps) - 1, 0)))
    if usage is not None:  # the whole run's, after its last trial (the trials' own come live)
        metrics.extend(_usage_points(usage, step=len(steps)))
    artifacts: dict[str, bytes] = {}
    if best is not None:
        program_json = _program_json(best)
        if program_json is not None:
            artifacts["best_program.json"] = _json_bytes(program_json, secrets)
        artifacts["best_program.txt"] = scrub(program_text(best), secrets).encode("utf-8")
    return RunContent(
        kind="optimization",
        name=f"{optimizer} optimize",
        params=_params(params),
        metrics=metrics,
        tags={"dspex.kind": "optimization", "mlflow.source.name": SOURCE_TAG},
        artifacts=artifacts,
        failed=failed,
    )


def step_metrics(steps: Sequence[Step]) -> list[MetricPoint]:
    """Each scored trial of ``steps`` at its step: ``score``, ``best_score_so_far``,
    ``num_examples`` and ``optimizer_step``."""
    points: list[MetricPoint] = []
    best: float | None = None
    for step in steps:
        if step.score is None:
            continue
        best = step.score if best is None else max(best, step.score)
        points.append(MetricPoint("score", float(step.score), step=step.step))
        points.append(MetricPoint("best_score_so_far", float(best), step=step.step))
        points.append(MetricPoint("num_examples", float(step.num_examples), step=step.step))
        if step.optimizer_step is not None:
            points.append(MetricPoint("optimizer_step", float(step.optimizer_step), step=step.step))
    return points


def usage_metrics(steps: Sequence[Step], usage: Any, elapsed_s: float | None = None) -> list[MetricPoint]:
    """The optimization's usage so far (``usage``: cost, tokens and LM calls since it began) at
    the step of each trial of ``steps``, and with ``elapsed_s`` its throughput there (the examples
    its trials up to that one evaluated, per second of ``elapsed_s``). For the trials just
    reported: the run keeps only points past its last step of each metric, so a trial keeps the
    usage known when it was first logged."""
    points: list[MetricPoint] = []
    examples = 0
    for step in steps:
        examples += step.num_examples
        points.extend(_usage_points(usage, step=step.step))
        if elapsed_s is not None and elapsed_s > 0:
            points.append(MetricPoint("examples_per_s", examples / elapsed_s, step=step.step))
    return points


def _usage_points(usage: Any, *, step: int) -> list[MetricPoint]:
    return [
        MetricPoint("cost_usd", float(usage.cost_usd), step=step),
        MetricPoint("total_tokens", float(usage.total_tokens), step=step),
        MetricPoint("lm_calls", float(usage.lm_calls), step=step),
    ]


def _plain_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs that are plain values and not secret-named (functions, LMs and programs are not
    knobs one compares runs by, and may hold keys)."""
    return {
        str(name): value
        for name, value in knobs.items()
        if not str(name).startswith("_")
        and not secret_key(str(name))
        and (value is None or isinstance(value, _PLAIN))
    }


def program_text(program: Any) -> str:
    """Each predictor's instructions and demos, readable."""
    parts: list[str] = [f"# {type(program).__name__}"]
    named = getattr(program, "named_predictors", None)
    for path, predictor in named() if callable(named) else ():
        signature = getattr(predictor, "signature", None)
        parts.append(f"\n## {path}")
        if signature is not None:
            parts.append(f"signature: {_signature_text(signature)}")
            parts.append(f"instructions:\n{getattr(signature, 'instructions', '')}")
        demos = list(getattr(predictor, "demos", None) or ())
        parts.append(f"demos ({len(demos)}):")
        for number, demo in enumerate(demos, 1):
            data = demo.to_dict() if hasattr(demo, "to_dict") else demo
            fields = redacted_mapping(data) if isinstance(data, Mapping) else data
            parts.append(f"  {number}. {json.dumps(fields, ensure_ascii=False, default=str)}")
    return "\n".join(parts) + "\n"


def _signature_text(signature: Any) -> str:
    inputs = ", ".join(getattr(signature, "input_fields", {}) or ())
    outputs = ", ".join(getattr(signature, "output_fields", {}) or ())
    return f"{inputs} -> {outputs}"


# --------------------------------------------------------------------------- shared


def _lms(program: Any, settings_lm: Any) -> list[Any]:
    found: list[Any] = [] if settings_lm is None else [settings_lm]
    named = getattr(program, "named_predictors", None)
    if callable(named):
        found.extend(predictor.lm for _, predictor in named() if getattr(predictor, "lm", None) is not None)
    return found


def _secrets(lms: Iterable[Any]) -> list[str]:
    """The API keys ``lms`` would send (their values, to be scrubbed from text)."""
    keys: set[str] = set()
    for lm in lms:
        reader = getattr(lm, "_key", None)
        key = reader() if callable(reader) else None
        env = getattr(lm, "api_key_env", None)
        if not key and isinstance(env, str):
            key = os.environ.get(env)
        if isinstance(key, str) and key:
            keys.add(key)
    return sorted(keys, key=len, reverse=True)


def _program_id(program: Any) -> str | None:
    from dspex.serialization import candidate_id

    try:
        return candidate_id(program)
    except Exception:  # not a dspex Module (a plain function): no id to give
        return None


def _program_json(program: Any) -> dict[str, Any] | None:
    from dspex.serialization import dump_program

    try:  # dspex's save format: LM settings without their keys (values scrubbed on top)
        return dump_program(program)
    except Exception as exc:  # not a dspex Module, or holds what JSON cannot: the run goes without it
        logger.warning("the program is logged to MLflow without its JSON (%s: %s)", type(exc).__name__, exc)
        return None


def _params(values: Mapping[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in values.items():
        if value is None or secret_key(key):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        params[key[:MAX_PARAM_KEY_CHARS]] = text[:MAX_PARAM_CHARS]
    return params


def _json_bytes(value: Any, secrets: Sequence[str]) -> bytes:
    text = json.dumps(value, ensure_ascii=False, indent=1, default=str)
    return scrub(text, secrets).encode("utf-8")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)

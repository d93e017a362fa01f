"""SIMBA's second strategy: an LM compares a better and a worse run and writes a rule per predictor.

    inputs = rule_inputs(student, good, bad, example, p90)
    rules, error = await write_rules(Predict(WriteRules), inputs, paths, rollout_id=7, lm=None)
    variant = apply_rules(variant, paths, rules)   # each rule after a blank line in the instructions

The answer is a JSON object keyed by module (predictor path); one that cannot be parsed, or names no
module of the program, is asked again once (a fresh draw through :func:`propose_text`), then the
rule is given up and the caller records why.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, LMError
from dspex.lm import LM
from dspex.optimizers.proposal import PROPOSAL_ATTEMPTS, propose_text
from dspex.optimizers.simba_strategies import Trajectory, Variant
from dspex.primitives import Example, Module
from dspex.signatures import InputField, OutputField, Signature

__all__ = ["WriteRules", "apply_rules", "parse_rules", "rule_inputs", "rule_lm", "write_rules"]

# A rule request's retry is its rollout id plus this (propose_text's own spacing).
_RETRY_SPACING = 1_000_003


class WriteRules(Signature):
    """Two runs of the same LM program on the same input earned different rewards. Contrast the
    worse run with the better one and, for every module of the program, write one rule that module
    should follow from now on so that on similar inputs it acts like the better run. A module never
    sees its past runs, so the rule must stand alone: name the kind of input it applies to and say
    concretely what to do or to avoid, for that module's own sub-task, without boilerplate."""

    program_code: str = InputField(desc="the program's code, or its structure")
    modules_defn: str = InputField(desc="each module of the program: its inputs, outputs and instructions")
    program_inputs: str = InputField(desc="the input both runs received")
    oracle_metadata: str = InputField(desc="the expected results (hidden from the program)")
    worse_program_trajectory: str = InputField(desc="each module's inputs and outputs in the worse run")
    worse_program_outputs: str = InputField(desc="what the worse run returned")
    worse_reward_value: str = InputField(desc="the reward of the worse run")
    worse_reward_info: str = InputField(desc="the metric's feedback on the worse run, if any")
    better_program_trajectory: str = InputField(desc="each module's inputs and outputs in the better run")
    better_program_outputs: str = InputField(desc="what the better run returned")
    better_reward_value: str = InputField(desc="the reward of the better run")
    better_reward_info: str = InputField(desc="the metric's feedback on the better run, if any")
    module_names: list[str] = InputField(desc="the modules that need a rule")
    discussion: str = OutputField(desc="where each module went wrong in the worse run, if it did")
    advice: str = OutputField(
        desc="a JSON object with one key per module name; each value is that module's rule, in the "
        "form: if the module receives <such input>, then it should <do this / avoid that>"
    )


def rule_inputs(
    student: Module, good: Trajectory, bad: Trajectory, example: Example, p90: float
) -> dict[str, Any]:
    """The :class:`WriteRules` inputs for a good and a bad run of ``example`` (DSPy's choices kept:
    when the two scored the same, the one that tells least is shown as unavailable)."""
    shown_good, shown_bad = _shown(good), _shown(bad)
    if good.score <= bad.score:
        if good.score > p90:
            shown_bad = _unavailable()
        else:
            shown_good = _unavailable()
    paths = [path for path, _ in student.named_predictors()]
    return {
        "program_code": _program_code(student),
        "modules_defn": _modules_text(student),
        "program_inputs": _json(dict(example.inputs().items())),
        "oracle_metadata": _json(dict(example.labels().items())),
        "worse_program_trajectory": _json(shown_bad["trajectory"]),
        "worse_program_outputs": _json(shown_bad["outputs"]),
        "worse_reward_value": str(shown_bad["score"]),
        "worse_reward_info": _json(shown_bad["info"]),
        "better_program_trajectory": _json(shown_good["trajectory"]),
        "better_program_outputs": _json(shown_good["outputs"]),
        "better_reward_value": str(shown_good["score"]),
        "better_reward_info": _json(shown_good["info"]),
        "module_names": paths,
    }


def _shown(run: Trajectory) -> dict[str, Any]:
    steps = [
        {"module_name": path, "inputs": inputs, "outputs": outputs} for path, inputs, outputs in run.steps
    ]
    info = {"feedback": run.feedback} if run.feedback else {}
    return {"trajectory": steps, "outputs": run.outputs or {}, "score": run.score, "info": info}


def _unavailable() -> dict[str, Any]:
    return {"trajectory": [], "outputs": {"N/A": "Prediction not available"}, "score": "N/A", "info": {}}


def parse_rules(text: str, paths: Sequence[str]) -> dict[str, str] | None:
    """``{predictor path: rule}`` from the LM's answer, or None when it holds no usable rule.

    A JSON object keyed by module names is the asked-for form; for a single-predictor program a
    plain sentence is taken as that predictor's rule.
    """
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        rules = {
            str(k): v.strip() for k, v in data.items() if k in paths and isinstance(v, str) and v.strip()
        }
        return rules or None
    if len(paths) == 1 and data is None and text.strip():
        return {paths[0]: text.strip()}
    return None


def apply_rules(variant: Variant, paths: Sequence[str], rules: Mapping[str, str]) -> Variant:
    """Each rule appended to its predictor's instructions, after a blank line (as DSPy does)."""
    instructions = tuple(
        f"{text}\n\n{rules[path]}" if path in rules else text
        for path, text in zip(paths, variant.instructions, strict=True)
    )
    return Variant(instructions, variant.demos)


def _program_code(program: Module) -> str:
    cls = type(program)
    if not cls.__module__.startswith("dspex."):
        try:
            return inspect.getsource(cls)
        except (OSError, TypeError):
            pass  # defined interactively: its structure is described below
    return repr(program)


def _modules_text(program: Module) -> str:
    parts = []
    for path, predictor in program.named_predictors():
        signature = predictor.signature
        inputs = ", ".join(signature.input_fields)
        outputs = ", ".join(signature.output_fields)
        text = signature.instructions
        parts.append(f"Module {path}\n  inputs: {inputs}\n  outputs: {outputs}\n  instructions: {text}")
    return "\n".join(parts)


def _json(value: Any) -> str:
    return json.dumps(to_jsonable_python(value, fallback=repr), indent=2, ensure_ascii=False)


async def write_rules(
    proposer: Module, inputs: Mapping[str, Any], paths: Sequence[str], *, rollout_id: int, lm: LM | None
) -> tuple[dict[str, str] | None, str | None]:
    """The LM's rule per predictor, or None and why not: asked again once when unusable."""
    error = "no attempt made"
    for attempt in range(PROPOSAL_ATTEMPTS):
        try:
            proposal = await propose_text(
                proposer,
                inputs,
                field="advice",
                rollout_id=rollout_id + attempt * _RETRY_SPACING,
                lm=lm,
                attempts=1,
            )
        except LMError as exc:
            if exc.systemic:
                raise
            return None, f"rule request failed: {type(exc).__name__}: {exc}"
        if proposal.text is None:
            error = (proposal.error or "empty rule").removesuffix(" (after 1 attempts)")
            continue
        rules = parse_rules(proposal.text, paths)
        if rules is not None:
            return rules, None
        error = f"unusable rule: no module of {list(paths)} in {proposal.text[:120]!r}"
    return None, f"{error}; skipped after {PROPOSAL_ATTEMPTS} attempts"


def rule_lm(prompt_model: LM | None, student: Module) -> LM | None:
    """The LM that writes rules (None: the one in context), checked before any LM call:
    ``prompt_model``, else the context's LM, else the one LM the student's predictors carry."""
    if prompt_model is not None:
        return prompt_model
    if current_settings().lm is not None:
        return None
    lms = {id(p.lm): p.lm for p in student.predictors() if p.lm is not None}
    if len(lms) == 1:
        only: LM = next(iter(lms.values()))
        return only
    raise ConfigurationError(
        "SIMBA needs an LM to write its rules: give prompt_model=, or configure one "
        "(dspex.configure(lm=...) or `with dspex.context(lm=...)`)"
    )

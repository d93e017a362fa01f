"""The simulated LM's parts: prompt reading, embeddings, configuration, command lines."""

from __future__ import annotations

import math
from typing import Literal

import dspy
import pytest
import typer
from typer.testing import CliRunner

from dspex.cli.simlm import register
from dspex.errors import ConfigurationError
from dspex.testing import SimLMConfig
from dspex.testing._embed import embed
from dspex.testing._prompt import read_prompt
from dspex.testing.sim_lm import _parser, config_from_args


class QA(dspy.Signature):
    """Answer with a number.
    Show your work."""

    question: str = dspy.InputField(desc="an arithmetic question")
    context: list[str] = dspy.InputField()
    answer: int = dspy.OutputField(desc="a number")
    kind: Literal["a", "b"] = dspy.OutputField()


def test_read_prompt_sees_fields_types_instructions_inputs_and_demos() -> None:
    demos = [
        dspy.Example(question="What is 1 + 2?", answer="3"),
        dspy.Example(question="What is 2 + 2?", answer="5"),
    ]
    messages = dspy.ChatAdapter().format(
        QA, demos=demos, inputs={"question": "What is 3 + 4?", "context": ["x"]}
    )
    view = read_prompt(messages, None)
    assert view.system is not None
    assert [(f.name, f.type) for f in view.system.inputs] == [("question", "str"), ("context", "list[str]")]
    assert [(f.name, f.type) for f in view.system.outputs] == [
        ("answer", "int"),
        ("kind", "Literal['a', 'b']"),
    ]
    assert view.system.instructions == "Answer with a number.\nShow your work."
    assert view.inputs == {"question": "What is 3 + 4?", "context": '["x"]'}
    assert (view.demo_count, view.correct_demos) == (2, 1)
    assert view.question is not None and view.question.answer == 7
    assert not view.json_mode


def test_embeddings_are_deterministic_unit_vectors_and_similar_texts_are_closer() -> None:
    def cosine(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(embed(a), embed(b), strict=True))

    vector = embed("What is 347 + 28?")
    assert vector == embed("What is 347 + 28?") and len(vector) == 64
    assert math.isclose(math.fsum(x * x for x in vector), 1.0)
    assert cosine("What is 347 + 28?", "What is 347 + 29?") > cosine(
        "What is 347 + 28?", "Name the capital of France."
    )
    assert embed("", 8) == [0.0] * 8


def test_config_rejects_unknown_and_invalid_knobs() -> None:
    with pytest.raises(ConfigurationError, match="accepted: latency"):
        SimLMConfig().updated(latncy=1)
    with pytest.raises(ConfigurationError, match="fail"):
        SimLMConfig().updated(fail=1.5)
    assert SimLMConfig().updated(rate=10).rate == 10


def test_config_never_shows_the_api_key() -> None:
    config = SimLMConfig().updated(require_api_key="sk-secret-123")
    assert "sk-secret-123" not in str(config.model_dump(mode="json")) + repr(config)


def test_module_command_line_reads_flags_over_json_and_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIM_KEY_FOR_TEST", "sk-abc")
    args = _parser().parse_args(
        ["--config-json", '{"latency": 0.5, "rate": 3}', "--latency", "0.1", "--model", "a", "--model", "b",
         "--require-api-key-env", "SIM_KEY_FOR_TEST"]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.latency, config.rate, config.models) == (0.1, 3, ("a", "b"))
    assert config.require_api_key is not None and config.require_api_key.get_secret_value() == "sk-abc"
    monkeypatch.delenv("SIM_KEY_FOR_TEST")
    with pytest.raises(ConfigurationError, match="SIM_KEY_FOR_TEST"):
        config_from_args(args)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    register(app)
    return app


def test_cli_help_says_it_is_a_simulation_with_an_example() -> None:
    result = CliRunner().invoke(_app(), ["sim-lm", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "SIMULATED" in result.output and "dspex sim-lm --port 8000" in result.output
    for flag in (
        "--latency",
        "--jitter",
        "--rate",
        "--fail",
        "--timeout-rate",
        "--require-api-key-env",
        "--seed",
    ):
        assert flag in result.output


@pytest.mark.parametrize("argv", [["--fail", "2"], ["--require-api-key-env", "DSPEX_TEST_UNSET_VARIABLE"]])
def test_cli_bad_values_exit_2_before_serving(argv: list[str]) -> None:
    result = CliRunner().invoke(_app(), ["sim-lm", *argv])
    assert result.exit_code == 2
    assert "error:" in result.output

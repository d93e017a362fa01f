"""RLM with an in-process exec() interpreter and scripted LMs: the loop, SUBMIT, sub-LM queries, tools."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import Callable
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError, LMServerError
from dspex.modules import RLM
from dspex.modules.rlm import _strip_code_fences
from dspex.primitives import Prediction
from dspex.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput
from dspex.primitives.sandbox_serializable import SandboxSerializable
from dspex.utils import DummyLM


class _Submitted(Exception):
    def __init__(self, output: dict[str, Any]) -> None:
        self.output = output


class ExecInterpreter:
    """A CodeInterpreter over exec() in one namespace: enough of PythonInterpreter to run RLM's loop.

    SUBMIT maps positional values onto ``output_fields`` in order, as the sandbox does.
    """

    execution_instructions = "Plain CPython, in process."

    def __init__(self) -> None:
        self.tools: dict[str, Callable[..., Any]] = {}
        self.output_fields: list[dict[str, str]] = []
        self.namespace: dict[str, Any] = {}
        self.codes: list[str] = []
        self.closed = False

    def start(self) -> None:
        pass

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        if self.closed:
            raise CodeInterpreterError("shut down")
        self.codes.append(code)
        compiled = compile(code, "<rlm>", "exec")  # SyntaxError propagates, as the protocol says
        self.namespace.update(self.tools, **(variables or {}), SUBMIT=self._submit)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compiled, self.namespace)
        except _Submitted as done:
            return FinalOutput(done.output)
        except Exception as exc:
            raise CodeExecutionError(f"{type(exc).__name__}: {exc}") from exc
        return out.getvalue()

    def _submit(self, *args: Any, **kwargs: Any) -> None:
        names = [field["name"] for field in self.output_fields]
        raise _Submitted({**dict(zip(names, args, strict=False)), **kwargs})

    def shutdown(self) -> None:
        self.closed = True


class Factory:
    """Makes an ExecInterpreter per call and keeps them."""

    execution_instructions = ExecInterpreter.execution_instructions

    def __init__(self) -> None:
        self.made: list[ExecInterpreter] = []

    def __call__(self) -> ExecInterpreter:
        self.made.append(ExecInterpreter())
        return self.made[-1]


class EchoLM(dspex.BaseLM):
    """Answers ``echo:<prompt>`` after a short wait, and records how many calls overlapped."""

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__("echo", cache=False)
        self.fail_on = fail_on
        self.in_flight = 0
        self.max_in_flight = 0

    async def aforward(self, prompt: str | None = None, messages: Any = None, **kwargs: Any) -> str:
        # lm("text") hands forward the prompt, as DSPy does; a chat call the messages
        content = prompt if messages is None else messages[-1]["content"]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        if content == self.fail_on:
            raise LMServerError("provider down")
        return f"echo:{content}"


def steps(*codes: str) -> DummyLM:
    """An LM for generate_action that writes these code blocks, one per step."""
    return DummyLM(
        [{"reasoning": f"step {i}", "code": f"```python\n{code}\n```"} for i, code in enumerate(codes)]
    )


# -- the loop ----------------------------------------------------------------------------------


def test_submit_ends_the_loop_with_typed_outputs_and_trajectory() -> None:
    factory = Factory()
    rlm = RLM("numbers: list[int] -> total: int", interpreter_factory=factory)
    with dspex.context(lm=steps("print(len(numbers))", "SUBMIT(sum(numbers))")):
        pred = rlm(numbers=[1, 2, 3])
    assert pred.total == 6
    assert [step["output"] for step in pred.trajectory] == ["3\n", "FINAL: {'total': 6}"]
    assert pred.trajectory[0]["code"] == "print(len(numbers))"
    assert pred.final_reasoning == "step 1"
    assert factory.made[0].closed


async def test_code_errors_go_back_to_the_lm_and_the_loop_continues() -> None:
    rlm = RLM("query -> answer", interpreter_factory=Factory())
    replies = steps("print(undefined_name)", "def broken(:", "SUBMIT('ok')")
    with dspex.context(lm=replies):
        pred = await rlm.acall(query="q")
    outputs = [step["output"] for step in pred.trajectory]
    assert outputs[0].startswith("[Error] NameError")
    assert outputs[1].startswith("[Error]")
    assert pred.answer == "ok"


def test_a_step_without_output_reminds_the_lm_to_print() -> None:
    rlm = RLM("query -> answer", interpreter_factory=Factory())
    with dspex.context(lm=steps("x = 1", "SUBMIT(str(x))")):
        pred = rlm(query="q")
    assert pred.trajectory[0]["output"] == "(no output - did you forget to print?)"


def test_a_wrong_type_in_submit_is_a_step_error_then_retried() -> None:
    rlm = RLM("query -> answer: Literal['yes', 'no']", interpreter_factory=Factory())
    with dspex.context(lm=steps("SUBMIT('maybe')", "SUBMIT('yes')")):
        pred = rlm(query="q")
    assert pred.trajectory[0]["output"].startswith("[Type Error] answer")
    assert pred.answer == "yes"


def test_missing_outputs_in_submit_are_named() -> None:
    rlm = RLM("query -> name: str, count: int", interpreter_factory=Factory())
    with dspex.context(lm=steps("SUBMIT(name='a')", "SUBMIT('a', 2)")):
        pred = rlm(query="q")
    assert pred.trajectory[0]["output"] == "[Error] Missing output fields: ['count']. Use SUBMIT(name, count)"
    assert (pred.name, pred.count) == ("a", 2)


def test_max_iters_falls_back_to_extract() -> None:
    rlm = RLM("query -> answer", max_iters=2, interpreter_factory=Factory())
    lm = DummyLM(
        [
            {"reasoning": "look", "code": "print(1)"},
            {"reasoning": "look again", "code": "print(2)"},
            {"answer": "extracted"},
        ]
    )
    with dspex.context(lm=lm):
        pred = rlm(query="q")
    assert pred.answer == "extracted"
    assert pred.final_reasoning == "Extract forced final output"
    assert len(pred.trajectory) == 2


def test_a_failing_interpreter_ends_the_call_and_is_shut_down() -> None:
    class Broken(ExecInterpreter):
        def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
            raise CodeInterpreterError("process died")

    made: list[Broken] = []
    rlm = RLM("query -> answer", interpreter_factory=lambda: made.append(Broken()) or made[-1])
    with dspex.context(lm=steps("print(1)")), pytest.raises(CodeInterpreterError, match="process died"):
        rlm(query="q")
    assert made[0].closed


def test_a_fence_for_another_language_is_not_run() -> None:
    factory = Factory()
    rlm = RLM("query -> answer", interpreter_factory=factory)
    lm = DummyLM([{"reasoning": "r", "code": "```bash\nls\n```"}, {"reasoning": "r", "code": "SUBMIT('x')"}])
    with dspex.context(lm=lm):
        pred = rlm(query="q")
    assert pred.trajectory[0]["output"].startswith("[Error] Expected Python code")
    assert factory.made[0].codes == ["SUBMIT('x')"]


# -- interpreters ------------------------------------------------------------------------------


async def test_a_caller_owned_interpreter_is_used_and_left_running() -> None:
    mine = ExecInterpreter()
    rlm = RLM("query -> answer", interpreter_factory=Factory())
    with dspex.context(lm=steps("SUBMIT(query.upper())")):
        pred = await rlm.acall(mine, query="hi")
    assert pred.answer == "HI"
    assert not mine.closed
    assert "llm_query" in mine.tools


def test_an_interpreter_passed_by_keyword_is_refused() -> None:
    rlm = RLM("query -> answer", interpreter_factory=Factory())
    with pytest.raises(TypeError, match="first positional argument"):
        rlm(query="q", interpreter=ExecInterpreter())


def test_an_interpreter_instance_is_not_a_factory() -> None:
    with pytest.raises(TypeError, match="first positional argument"):
        RLM("query -> answer", interpreter_factory=ExecInterpreter())  # type: ignore[arg-type]


def test_inputs_are_checked_before_an_interpreter_is_made() -> None:
    factory = Factory()
    rlm = RLM("context, query -> answer", interpreter_factory=factory)
    with pytest.raises(ValueError, match=r"Missing required inputs: \['query'\]"):
        rlm(context="c")
    with pytest.raises(ValueError, match=r"Unexpected inputs not declared in the signature: \['extra'\]"):
        rlm(context="c", query="q", extra=1)
    assert factory.made == []


def test_a_call_time_factory_swaps_the_runtime_notes_in_the_prompt() -> None:
    class Other(Factory):
        execution_instructions = "A remote box."

    seen: list[Any] = []

    class Recorder:
        def __call__(self, **inputs: Any) -> Prediction:
            seen.append(inputs.get("signature"))
            return Prediction(reasoning="r", code="SUBMIT('done')")

    rlm = RLM("query -> answer", interpreter_factory=Factory())
    rlm.generate_action = Recorder()  # type: ignore[assignment]
    assert rlm(query="q").answer == "done"
    assert rlm(query="q", interpreter_factory=Other()).answer == "done"
    assert seen[0] is None  # same runtime: the predictor's own signature
    assert "A remote box." in seen[1].instructions
    assert "Plain CPython" not in seen[1].instructions


# -- sub-LM queries ----------------------------------------------------------------------------


def test_llm_query_from_code_is_a_counted_dspex_lm_call() -> None:
    sub = EchoLM()
    rlm = RLM("query -> answer", sub_lm=sub, interpreter_factory=Factory())
    with dspex.context(lm=steps("SUBMIT(llm_query('hello'))")):
        pred = rlm(query="q")
    assert pred.answer == "echo:hello"
    assert len(sub.history) == 1
    assert pred.usage.lm_calls == 2  # the action step and the sub-query


def test_llm_query_batched_runs_concurrently_and_keeps_order() -> None:
    sub = EchoLM()
    tools = RLM("query -> answer", sub_lm=sub, interpreter_factory=Factory())._make_llm_tools()
    prompts = [f"p{i}" for i in range(6)]
    assert tools["llm_query_batched"](prompts) == [f"echo:p{i}" for i in range(6)]
    assert sub.max_in_flight == 6


def test_llm_query_batched_bounds_concurrency() -> None:
    sub = EchoLM()
    tools = RLM("query -> answer", sub_lm=sub, interpreter_factory=Factory())._make_llm_tools(max_workers=2)
    tools["llm_query_batched"]([f"p{i}" for i in range(5)])
    assert sub.max_in_flight == 2


def test_an_lm_failure_in_a_batch_marks_only_its_prompt() -> None:
    tools = RLM(
        "query -> answer", sub_lm=EchoLM(fail_on="bad"), interpreter_factory=Factory()
    )._make_llm_tools()
    results = tools["llm_query_batched"](["good", "bad"])
    assert results[0] == "echo:good"
    assert results[1].startswith("[ERROR]") and "provider down" in results[1]


def test_no_lm_is_an_error_for_llm_query_and_a_marker_in_a_batch() -> None:
    tools = RLM("query -> answer", interpreter_factory=Factory())._make_llm_tools()
    with dspex.context(lm=None):
        with pytest.raises(ConfigurationError, match="No LM configured"):
            tools["llm_query"]("q")
        assert tools["llm_query_batched"](["q"]) == [
            "[ERROR] No LM configured. Use dspy.configure(lm=...) or pass sub_lm to RLM."
        ]


def test_the_sub_lm_defaults_to_the_lm_in_context_at_query_time() -> None:
    tools = RLM("query -> answer", interpreter_factory=Factory())._make_llm_tools()
    with dspex.context(lm=EchoLM()):
        assert tools["llm_query_batched"](["a", "b"]) == ["echo:a", "echo:b"]


def test_the_call_budget_covers_both_query_tools() -> None:
    tools = RLM(
        "query -> answer", max_llm_calls=3, sub_lm=EchoLM(), interpreter_factory=Factory()
    )._make_llm_tools()
    tools["llm_query"]("one")
    tools["llm_query_batched"](["two", "three"])
    with pytest.raises(RuntimeError, match="LLM call limit exceeded: 3 \\+ 1 > 3"):
        tools["llm_query"]("four")


def test_an_empty_prompt_is_refused() -> None:
    tools = RLM("query -> answer", sub_lm=EchoLM(), interpreter_factory=Factory())._make_llm_tools()
    with pytest.raises(ValueError, match="prompt cannot be empty"):
        tools["llm_query"]("")
    assert tools["llm_query_batched"]([]) == []


# -- user tools --------------------------------------------------------------------------------


def lookup(key: str, default: str = "unknown") -> str:
    """Look up a fruit's colour."""
    return {"apple": "red"}.get(key, default)


async def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


def test_tools_are_callable_from_code_by_position_or_keyword() -> None:
    rlm = RLM("fruit -> color", tools=[lookup, shout], interpreter_factory=Factory())
    with dspex.context(lm=steps("SUBMIT(shout(lookup(fruit)) + lookup(key='pear', default='?'))")):
        assert rlm(fruit="apple").color == "RED?"


def test_tools_are_described_in_the_action_prompt() -> None:
    rlm = RLM("fruit -> color", tools=[lookup], interpreter_factory=Factory())
    instructions = rlm.generate_action.signature.instructions
    assert "- `lookup(key: string, default: string)` - Look up a fruit's colour." in instructions
    assert rlm.tools == {"lookup": rlm.tools["lookup"]}


@pytest.mark.parametrize(
    ("signature", "tools", "message"),
    [
        ("context -> answer", [dspex.Tool(lookup, name="SUBMIT")], "conflicts with built-in"),
        ("context -> answer", [dspex.Tool(lookup, name="not-valid")], "valid Python identifier"),
        ("context -> answer", [lookup, dspex.Tool(shout, name="lookup")], "Duplicate tool name 'lookup'"),
        ("llm_query -> answer", [], "Input fields conflict with built-in sandbox functions"),
        ("lookup -> answer", [lookup], r"Input fields conflict with user tools: \['lookup'\]"),
        ("context -> trajectory", [], "Output fields conflict with RLM result metadata"),
        ("interpreter_factory -> answer", [], "reserved for RLM runtime configuration"),
    ],
)
def test_names_that_would_collide_are_refused(signature: str, tools: list[Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RLM(signature, tools=tools, interpreter_factory=Factory())


def test_tools_must_be_a_list_of_callables() -> None:
    with pytest.raises(TypeError, match="tools must be a list, not a dict"):
        RLM("context -> answer", tools={"lookup": lookup}, interpreter_factory=Factory())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        RLM("context -> answer", tools=["nope"], interpreter_factory=Factory())  # type: ignore[list-item]


# -- inputs that rebuild themselves in the REPL ------------------------------------------------


class Blob(SandboxSerializable):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def sandbox_setup(self) -> str:
        return "import json"

    def to_sandbox(self) -> bytes:
        return self.payload

    def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
        return f"{var_name} = {data_expr}"

    def rlm_preview(self, max_chars: int = 500) -> str:
        return f"Blob({len(self.payload)} bytes)"


def test_a_serializable_input_is_rebuilt_in_the_repl_from_a_variable() -> None:
    factory = Factory()
    rlm = RLM("data, query -> answer", interpreter_factory=factory)
    with dspex.context(lm=steps("SUBMIT(str(data) + query)")):
        pred = rlm(data=Blob(b"abc"), query="!")
    assert pred.answer == "abc!"
    setup = factory.made[0].codes[0]
    assert setup == "import json\ndata = _raw_data"


def test_binary_payloads_travel_as_base64() -> None:
    repl = ExecInterpreter()
    rlm = RLM("data -> answer", interpreter_factory=Factory())
    plain = rlm._prepare_serializable_vars({"data": Blob(b"\xff\x00")}, repl)
    assert plain == {}
    assert repl.namespace["data"] == b"\xff\x00"
    assert repl.namespace["_raw_data_base64"] == base64.b64encode(b"\xff\x00").decode()


def test_variables_describe_serializables_by_their_preview() -> None:
    rlm = RLM("data, query -> answer", interpreter_factory=Factory())
    data, query = rlm._build_variables(data=Blob(b"abc"), query="q")
    assert data.preview == "Blob(3 bytes)"
    assert "Sandbox imports available:\nimport json" in data.desc
    assert query.preview == "q"


# -- reading code out of a reply ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("print(1)", "print(1)"),
        ("```python\nprint(1)\n```", "print(1)"),
        ("```PY3\nx = 1\n```", "x = 1"),
        ("Let me look.\n```\nprint(2)\n```\nthen submit", "print(2)"),
        ("```python\nprint('open')", "print('open')"),
        ("```\n```python\nprint(3)\n```\n```", "print(3)"),
        ("```python", "```python"),
    ],
)
def test_strip_code_fences(reply: str, code: str) -> None:
    assert _strip_code_fences(reply) == code


def test_strip_code_fences_refuses_another_language() -> None:
    with pytest.raises(SyntaxError, match="not sql"):
        _strip_code_fences("```sql\nselect 1\n```")


# -- the real sandbox --------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_in_the_sandbox() -> None:
    """One Pyodide session: an async tool called positionally, both sub-LM tools, a typed SUBMIT."""
    from dspex.primitives.python_interpreter import PythonInterpreter
    from dspex.sandbox.errors import SandboxStartupError
    from dspex.sandbox.install import check_installed

    try:
        check_installed()
    except SandboxStartupError as exc:
        pytest.skip(f"the Deno/Pyodide sandbox is not installed: {exc}")
    sub = EchoLM()
    rlm = RLM("fruit -> color: str, n: int", tools=[shout], sub_lm=sub, interpreter_factory=PythonInterpreter)
    code = "b = llm_query_batched(['x', 'y'])\nSUBMIT(shout(llm_query(fruit)), len(b))"
    with dspex.context(lm=steps("print(fruit)", code)):
        pred = rlm(fruit="kiwi")
    assert (pred.color, pred.n) == ("ECHO:KIWI", 2)
    assert pred.trajectory[0]["output"] == "kiwi\n"
    assert sub.max_in_flight == 2

"""What ``RLM`` asks its LM: the action and extract signatures, and reading code out of a reply.

The instructions are DSPy 3.4.1's RLM wording (without its sandbox ``dspy`` sub-agent section,
which dspex's REPL does not offer), so an RLM program means the same thing to the LM in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from dspex.adapters.types.tool import Tool
from dspex.adapters.utils import translate_field_type
from dspex.primitives.repl_types import REPLHistory
from dspex.signatures import InputField, OutputField, Signature, make_signature

__all__ = [
    "ACTION_INSTRUCTIONS_TEMPLATE",
    "build_action_signature",
    "build_extract_signature",
    "execution_instructions",
    "format_tool_docs",
    "interpreter_rules",
    "strip_code_fences",
]

# One line per item; long lines are split only in this source (the text has no break there).
ACTION_INSTRUCTIONS_TEMPLATE: Final = "\n".join(
    [
        "You are tasked with producing the following outputs given the inputs {inputs}:",
        "{output_fields}",
        "",
        "You have access to a Python REPL environment. Write Python code and it will be executed. "
        "You will see the output, then write more code based on what you learned. "
        "This is an iterative process.",
        "{interpreter_rules}",
        "Available:",
        "- Variables: {inputs} (your input data)",
        "- `llm_query(prompt)` - query a sub-LLM (~500K char capacity) for semantic analysis",
        "- `llm_query_batched(prompts)` - query multiple prompts concurrently "
        "(much faster for multiple queries)",
        "- `print()` - ALWAYS print to see results",
        "- `SUBMIT({final_output_names})` - submit final output when done",
        "",
        "IMPORTANT: This is ITERATIVE. Each code block you write will execute, you'll see the output, "
        "then you decide what to do next. Do NOT try to solve everything in one step.",
        "",
        "1. EXPLORE FIRST - Look at your data before processing it. Print samples, check types/lengths, "
        "understand the structure.",
        "2. ITERATE - Write small code snippets, observe outputs, then decide next steps. "
        "State persists between iterations.",
        "3. VERIFY BEFORE SUBMITTING - If results seem wrong (zeros, empty, unexpected), "
        "reconsider your approach.",
        "4. USE llm_query FOR SEMANTICS - String matching finds WHERE things are; "
        "llm_query understands WHAT things mean.",
        "5. MINIMIZE RETYPING (INPUTS & OUTPUTS) - When values are long, precise, or error-prone "
        "(IDs, numbers, code, quotes), re-access them via variables and parse/compute in code instead of "
        "retyping. Use small, targeted prints to sanity-check, but avoid manual copying when variables can "
        "carry the exact value.",
        "6. SUBMIT ONLY AFTER SEEING OUTPUTS - SUBMIT ends the current run immediately. If you need to "
        "inspect printed output, run it in one step, review the result, then call SUBMIT in a later step.",
        "",
        "You have max {max_llm_calls} sub-LLM calls. When done, call SUBMIT() with your output.",
    ]
)

_EXTRACT_INSTRUCTIONS: Final = (
    "Based on the REPL trajectory, extract the final outputs now.\n\n"
    "Review your trajectory to see what information you gathered and what values you computed, "
    "then provide the final outputs."
)
_TOOLS_HEADER: Final = "\nAdditional tools available (use these instead of standard library equivalents):"
_VARIABLES_DESC: Final = "Metadata about the variables available in the REPL"
# Fence tags read as Python; any other tag (```bash, ```json) is refused rather than run as Python.
_PYTHON_FENCE_TAGS: Final = frozenset({"python", "py", "python3", "py3", ""})
_FENCE: Final = "```"


def execution_instructions(factory: Callable[..., Any] | None) -> str:
    """The runtime notes an interpreter factory offers for the prompt (its ``execution_instructions``)."""
    notes = getattr(factory, "execution_instructions", "")
    if not isinstance(notes, str):
        raise TypeError("interpreter_factory.execution_instructions must be a string")
    return notes


def interpreter_rules(notes: str) -> str:
    """The prompt fragment for an interpreter's runtime notes (empty without notes)."""
    return f"\nExecution environment:\n{notes}\n" if notes else ""


def format_tool_docs(tools: Mapping[str, Tool]) -> str:
    """One line per user tool, ``- `name(arg: type, ...)` - description``, under a header."""
    if not tools:
        return ""
    lines = [_TOOLS_HEADER]
    for tool in tools.values():
        params = ", ".join(
            f"{name}: {schema.get('type', 'Any')}" for name, schema in (tool.args or {}).items()
        )
        desc = (tool.desc or "No description").replace("\n", "  ")
        lines.append(f"- `{tool.name}({params})` - {desc}")
    return "\n".join(lines)


def _task_instructions(signature: type[Signature]) -> str:
    return f"{signature.instructions}\n\n" if signature.instructions else ""


def build_action_signature(
    signature: type[Signature], *, notes: str, tools: Mapping[str, Tool], max_llm_calls: int
) -> type[Signature]:
    """The signature of each step: variables, history and iteration in; reasoning and code out."""
    instructions = ACTION_INSTRUCTIONS_TEMPLATE.format(
        inputs=", ".join(f"`{name}`" for name in signature.input_fields),
        final_output_names=", ".join(signature.output_fields),
        output_fields="\n".join(
            f"- {translate_field_type(n, f)}" for n, f in signature.output_fields.items()
        ),
        max_llm_calls=max_llm_calls,
        interpreter_rules=interpreter_rules(notes),
    )
    return (
        make_signature({}, _task_instructions(signature) + instructions + format_tool_docs(tools))
        .append("variables_info", InputField(desc=_VARIABLES_DESC), type_=str)
        .append(
            "repl_history",
            InputField(desc="Previous REPL code executions and their outputs"),
            type_=REPLHistory,
        )
        .append(
            "iteration", InputField(desc="Current iteration number (1-indexed) out of max_iters"), type_=str
        )
        .append(
            "reasoning",
            OutputField(desc="Think step-by-step: what do you know? What remains? Plan your next action."),
            type_=str,
        )
        .append(
            "code",
            OutputField(
                desc="Python code to execute. Use markdown code block format: ```python\\n<code>\\n```"
            ),
            type_=str,
        )
    )


def build_extract_signature(signature: type[Signature]) -> type[Signature]:
    """The fallback after the last step: variables and history in, the task's outputs out."""
    task = _task_instructions(signature)
    objective = f"The trajectory was generated with the following objective: \n{task}\n" if task else ""
    extract = make_signature(dict(signature.output_fields), objective + _EXTRACT_INSTRUCTIONS)
    extract = extract.prepend(
        "repl_history", InputField(desc="Your REPL interactions so far"), type_=REPLHistory
    )
    return extract.prepend("variables_info", InputField(desc=_VARIABLES_DESC), type_=str)


def strip_code_fences(code: str) -> str:
    """The Python in an LM reply: the first fenced block's body, or the reply itself when unfenced.

    Text around the block is dropped, an outer bare fence pair wrapping the block is unwrapped, and
    an unclosed fence gives the rest of the reply. ``SyntaxError`` for a block tagged as another
    language, which the LM then sees as the step's error.
    """
    code = code.strip()
    if _FENCE in code:
        code = _unwrap_bare_fences(code)
    if _FENCE not in code:
        return code
    tag_line, newline, body = code[code.find(_FENCE) + len(_FENCE) :].partition("\n")
    if not newline:
        return code
    words = tag_line.split(maxsplit=1)
    tag = words[0].lower() if words else ""
    if tag not in _PYTHON_FENCE_TAGS:
        raise SyntaxError(f"Expected Python code but got ```{tag} fence. Write Python code, not {tag}.")
    end = body.find(_FENCE)
    return body.strip() if end == -1 else body[:end].strip()


def _unwrap_bare_fences(code: str) -> str:
    """Drop decorative bare ``` lines that wrap the whole reply (```\\n```python ... ```\\n```)."""
    lines = code.splitlines()
    while len(lines) >= 2 and lines[0].strip() == _FENCE and lines[-1].strip() == _FENCE:
        lines = lines[1:-1]
    return "\n".join(lines).strip()

"""Run DSPy's own test files against dspex, with only their imports changed, and count.

DSPy's tests are not part of this project (they are DSPy's, not ours): point this script at a
checkout of the stanfordnlp/dspy repository. It copies the chosen test folders into a scratch
directory twice, runs them once against the real ``dspy`` (the reference: a test that fails there
is not counted) and once with every ``dspy`` import rewritten to ``dspex``, and prints the pass rate
over the tests that do not mock DSPy internals or litellm, split into "core" and "agents/types" (the
tests that need native tool calls, ``Tool``, ``ToolCalls`` or the special types) for the six folders
first measured, and "extra" / "extra-agents" for the folders added later (utils, callback, clients,
streaming, datasets, core, propose, retrievers)::

    .venv/bin/python scripts/dspy_compat_tests.py --dspy-repo /path/to/dspy [--only predict]

``--failures`` lists every counted test that fails against dspex, with the first line of its error.
``--reference DIR/dspy/report.xml`` reuses the reference side of an earlier run (same folders).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

FOLDERS = ("signatures", "adapters", "primitives", "predict", "evaluate", "teleprompt")
# Counted as groups of their own ("extra", "extra-agents"), so that the core and agents numbers stay
# comparable with the runs made before these folders were added.
EXTRA_FOLDERS = ("utils", "callback", "clients", "streaming", "datasets", "core", "propose", "retrievers")
ALL_FOLDERS = FOLDERS + EXTRA_FOLDERS
GROUPS = ("core", "agents", "extra", "extra-agents", "mocks")

# A test whose own source (or a fixture it names) mentions one of these mocks DSPy's internals or
# litellm, so its outcome says nothing about dspex: it is not counted.
_MOCKS = re.compile(
    r"litellm|mock\.patch|patch\(\s*[\"']dspy|patch\.object\(\s*dspy|mocker\.patch|monkeypatch\.setattr\(\s*dspy"
    r"|monkeypatch\.setattr\(\s*f?[\"']dspy|_litellm|mock_completion|mock_acompletion"
)
# ...and one that needs what the "Agents, tools and types" issue owns is counted apart.
_AGENT_TYPES = re.compile(
    r"\bTool\b|ToolCalls|\bHistory\b|\bImage\b|\bAudio\b|\bFile\b|\bCode\[|\bCode\b|Reasoning|Citations"
    r"|\bDocument\b|native_function_calling|ReActV2|dspy\.Type\b|BaseType|PythonInterpreter|Deno|\bRLM\b"
    r"|ProgramOfThought|CodeAct"
)

_CONFTEST = '''
import pytest


@pytest.fixture(autouse=True)
def clear_settings():
    """Each test starts from fresh settings and a memory-only cache (what DSPy's own conftest does)."""
    import {pkg} as dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None)
    yield
    _reset_settings()


def _reset_settings():
    if "{pkg}" == "dspy":
        import copy

        import dspy
        from dspy.dsp.utils.settings import DEFAULT_CONFIG

        dspy.configure(**copy.deepcopy(DEFAULT_CONFIG), inherit_config=False)
    else:
        from dspex.configuration import reset_settings

        reset_settings()


@pytest.fixture
def anyio_backend():
    return "asyncio"


def pytest_addoption(parser):
    for flag in ("reliability", "extra", "llm_call", "deno"):
        parser.addoption(f"--{{flag}}", action="store_true", default=False)


def pytest_configure(config):
    for flag in ("reliability", "extra", "llm_call", "deno"):
        config.addinivalue_line("markers", flag)


def pytest_collection_modifyitems(config, items):
    for flag in ("reliability", "extra", "llm_call", "deno"):
        skip = pytest.mark.skip(reason=f"needs --{{flag}}")
        for item in items:
            if flag in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def lm_for_test():
    pytest.skip("no live LM here")
'''

_PYTEST_INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings =
    default
"""


@dataclass(frozen=True)
class Outcome:
    file: str
    name: str
    status: str  # passed | failed | skipped
    message: str


def main() -> int:
    args = _parse_args()
    repo = Path(args.dspy_repo)
    folders = tuple(args.only) if args.only else ALL_FOLDERS
    # kept after the run: each side's pytest log is there to read (dspy.log, dspex.log)
    root = Path(tempfile.mkdtemp(prefix="dspy-compat-"))
    sources = _export_tests(repo, root / "src", folders)
    if args.reference:  # an earlier run's dspy/report.xml: the same DSPy, so the same outcomes
        reference = _read_junit(Path(args.reference))
    else:
        reference = _run(sources, root / "dspy", "dspy", folders, args.timeout)
    ours = _run(sources, root / "dspex", "dspex", folders, args.timeout)
    kinds = _classify(sources, folders)
    _report(reference, ours, kinds, show_failures=args.failures, json_out=args.json)
    print(f"pytest logs and the rewritten tests: {root}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dspy-repo", required=True, help="a checkout (or bare git dir) of stanfordnlp/dspy")
    parser.add_argument("--only", nargs="*", choices=ALL_FOLDERS, help="test folders to run (default: all)")
    parser.add_argument("--failures", action="store_true", help="list the counted tests that fail on dspex")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test")
    parser.add_argument("--json", help="write every outcome to this file")
    parser.add_argument(
        "--reference",
        help="reuse the dspy side of an earlier run (its dspy/report.xml) instead of running it",
    )
    return parser.parse_args()


def _export_tests(repo: Path, dest: Path, folders: tuple[str, ...]) -> Path:
    """DSPy's tests folder, from a work tree or (for a bare mirror) from HEAD."""
    dest.mkdir(parents=True)
    if (repo / "tests").is_dir():
        shutil.copytree(repo / "tests", dest / "tests")
    else:
        archive = subprocess.run(
            ["git", "--git-dir", str(repo), "archive", "HEAD", "tests"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "tests"


def _run(sources: Path, where: Path, package: str, folders: tuple[str, ...], timeout: int) -> list[Outcome]:
    tests = where / "tests"
    shutil.copytree(sources, tests)
    for path in tests.rglob("*.py"):
        text = path.read_text()
        if package == "dspex":
            text = _rewrite_imports(text)
        path.write_text(text)
    (tests / "conftest.py").write_text(_CONFTEST.format(pkg=package))
    (where / "pytest.ini").write_text(_PYTEST_INI)
    report = where / "report.xml"
    command = [
        sys.executable, "-m", "pytest", *(f"tests/{folder}" for folder in folders),
        "-q", "-p", "no:cacheprovider", f"--junitxml={report}", f"--timeout={timeout}",
        "--continue-on-collection-errors",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=where, capture_output=True, text=True)
    (where.parent / f"{package}.log").write_text(result.stdout + result.stderr)
    return _read_junit(report)


def _rewrite_imports(text: str) -> str:
    """What a DSPy user changes: the imports, and nothing else."""
    text = re.sub(r"^(\s*)import dspy\s*$", r"\1import dspex as dspy", text, flags=re.M)
    text = re.sub(r"^(\s*)from dspy(\.|\s)", r"\1from dspex\2", text, flags=re.M)
    # `import dspy.clients` binds the name dspy and loads the submodule: both, under dspex.
    text = re.sub(
        r"^(\s*)import dspy\.(\S+)\s*$", r"\1import dspex.\2; import dspex as dspy", text, flags=re.M
    )
    return text


def _read_junit(report: Path) -> list[Outcome]:
    if not report.exists():
        return []
    outcomes = []
    for case in ET.parse(report).getroot().iter("testcase"):
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status, message = "failed", (child.get("message") or child.text or "").strip()
            elif child.tag == "skipped":
                status, message = "skipped", child.get("message") or ""
        file = case.get("classname", "").replace(".", "/")
        outcomes.append(
            Outcome(file, case.get("name", ""), status, message.splitlines()[0] if message else "")
        )
    return outcomes


def _classify(sources: Path, folders: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """(module path, function name) -> one of GROUPS, from each test's own source and folder."""
    kinds: dict[tuple[str, str], str] = {}
    for folder in folders:
        extra = folder in EXTRA_FOLDERS
        for path in (sources / folder).rglob("test_*.py"):
            text = path.read_text()
            tree = ast.parse(text)
            fixtures = _fixture_sources(tree, text)
            module = str(path.relative_to(sources.parent).with_suffix("")).replace("/", ".")
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                    body = ast.get_source_segment(text, node) or ""
                    used = " ".join(fixtures.get(arg.arg, "") for arg in node.args.args)
                    kind = _kind(body + used)
                    if extra and kind != "mocks":
                        kind = "extra" if kind == "core" else "extra-agents"
                    kinds[(module, node.name)] = kind
    return kinds


def _fixture_sources(tree: ast.Module, text: str) -> dict[str, str]:
    fixtures = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            "fixture" in ast.unparse(d) for d in node.decorator_list
        ):
            fixtures[node.name] = ast.get_source_segment(text, node) or ""
    return fixtures


def _default_kind(file: str) -> str:
    """The group of a test whose source was not found (a method of a test class): its folder's."""
    parts = file.split("/")
    return "extra" if len(parts) > 1 and parts[1] in EXTRA_FOLDERS else "core"


def _kind(source: str) -> str:
    if _MOCKS.search(source):
        return "mocks"
    if _AGENT_TYPES.search(source):
        return "agents"
    return "core"


def _report(
    reference: list[Outcome],
    ours: list[Outcome],
    kinds: dict[tuple[str, str], str],
    *,
    show_failures: bool,
    json_out: str | None,
) -> None:
    passing_on_dspy = sorted((o.file, o.name) for o in reference if o.status == "passed")
    ours_by_key = {(o.file, o.name): o for o in ours}
    counts: dict[str, list[int]] = {group: [0, 0] for group in GROUPS}
    per_file: dict[str, list[int]] = {}
    failures = []
    for key in passing_on_dspy:
        # a test missing on dspex did not even import there: it counts as a failure
        outcome = ours_by_key.get(key, Outcome(key[0], key[1], "failed", "not collected (import error)"))
        kind = kinds.get((outcome.file.replace("/", "."), outcome.name.split("[")[0])) or _default_kind(
            outcome.file
        )
        passed = outcome.status == "passed"
        counts[kind][0] += passed
        counts[kind][1] += 1
        if kind != "mocks":
            tally = per_file.setdefault(outcome.file, [0, 0])
            tally[0] += passed
            tally[1] += 1
            if not passed:
                failures.append(f"{kind:12} {outcome.file}::{outcome.name}: {outcome.message[:160]}")
    missing = [key for key in passing_on_dspy if key not in ours_by_key]
    print(f"tests passing on dspy: {len(passing_on_dspy)} (not collected on dspex: {len(missing)})")
    for file, (passed, total) in sorted(per_file.items()):
        print(f"  {file:55} {passed:4}/{total:<4}")
    for kind, (passed, total) in counts.items():
        rate = 100 * passed / total if total else 0.0
        print(f"{kind:12} {passed:5}/{total:<5} {rate:5.1f}%")
    core, agents = counts["core"], counts["agents"]
    both = 100 * (core[0] + agents[0]) / max(1, core[1] + agents[1])
    print(f"core+agents {core[0] + agents[0]}/{core[1] + agents[1]} {both:.1f}%")
    if show_failures:
        print("\n".join(sorted(failures)))
    if json_out:
        Path(json_out).write_text(json.dumps([o.__dict__ for o in ours], indent=1))


if __name__ == "__main__":
    raise SystemExit(main())

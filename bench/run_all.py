"""Run the benchmarks in bench/ one after another and write what they print into bench/RESULTS.md.

Reproduce:

    .venv/bin/python bench/run_all.py                      # every benchmark
    .venv/bin/python bench/run_all.py evaluate_vs_dspy     # only the ones named

Every ``bench/*.py`` except this file, ``common.py`` and ``_private.py`` files is a benchmark: a
script that prints a markdown section to stdout (progress goes to stderr). Each gets a
``## <name>`` section in RESULTS.md with the command and the date; running it again replaces its
section and leaves the others alone. A benchmark that fails is reported and its old section kept.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
NOT_BENCHMARKS = {"run_all", "common"}
TITLE = (
    "# Benchmark results\n\n"
    "Written by `bench/run_all.py`; each section names the command that reproduces it.\n"
)


def benchmarks(names: list[str]) -> list[Path]:
    """The benchmark scripts, all of them or those ``names`` asks for (unknown names: exit 2)."""
    found = {p.stem: p for p in sorted(BENCH.glob("*.py")) if p.stem not in NOT_BENCHMARKS}
    found = {stem: path for stem, path in found.items() if not stem.startswith("_")}
    unknown = [name for name in names if name not in found]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; known: {', '.join(found)}")
    return [found[name] for name in names] if names else list(found.values())


def run(script: Path) -> str | None:
    """Run one benchmark; its stdout, or None when it failed."""
    print(f"== {script.name}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, str(script)], cwd=BENCH.parent, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(f"!! {script.name} failed with exit code {done.returncode}", file=sys.stderr)
        return None
    return done.stdout.strip()


def sections(text: str) -> dict[str, str]:
    """``{heading: body}`` of the ``## `` sections in RESULTS.md, in order."""
    found: dict[str, str] = {}
    heading = None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            heading = line[3:].strip()
            found[heading] = ""
        elif heading is not None:
            found[heading] += line
    return found


def write(results: dict[str, str]) -> None:
    existing = sections(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    for name, output in results.items():
        existing[name] = f"\n`.venv/bin/python bench/{name}.py` ({stamp})\n\n{output}\n\n"
    body = "".join(f"## {heading}\n{text}" for heading, text in existing.items())
    RESULTS.write_text(f"{TITLE}\n{body}".rstrip() + "\n", encoding="utf-8")


def main() -> int:
    results: dict[str, str] = {}
    failed = []
    for script in benchmarks(sys.argv[1:]):
        output = run(script)
        if output is None:
            failed.append(script.stem)
        else:
            results[script.stem] = output
    write(results)
    print(
        f"wrote {RESULTS.relative_to(BENCH.parent)}; failed: {', '.join(failed) or 'none'}", file=sys.stderr
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

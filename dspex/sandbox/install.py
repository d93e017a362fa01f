"""Where the sandbox's runtime lives, and how ``make install`` puts it there.

Deno comes from the ``deno`` package on PyPI (a pinned dependency that ships the binary); Pyodide
from the npm registry, fetched once by ``deno cache`` into a ``DENO_DIR`` of our own under
``~/.cache/dspex/deno``. Sandboxes then run with ``--cached-only``: no network at run time.

Run ``python -m dspex.sandbox.install`` (what ``make install`` does) to populate the cache; it
returns at once when the cache is already complete. ``--check`` only reports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dspex.sandbox.errors import SandboxStartupError

__all__ = [
    "DENO_VERSION",
    "PYODIDE_VERSION",
    "RUNNER_PATH",
    "default_deno_dir",
    "deno_env",
    "ensure_installed",
    "find_deno",
    "pyodide_dir",
]

DENO_VERSION = "2.9.8"
# Must match the import in runner.js. 0.29.x ships the wasm, the stdlib zip and the lock file in
# its npm package, so nothing is fetched from a CDN at start-up.
PYODIDE_VERSION = "0.29.4"
RUNNER_PATH = Path(__file__).with_name("runner.js")
GUEST_PATH = Path(__file__).with_name("_guest.py")
PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.asm.js",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
FIX = "run `make install` (or `python -m dspex.sandbox.install`)"
_CACHE_TIMEOUT_S = 600


def default_deno_dir() -> Path:
    """``~/.cache/dspex/deno``: the DENO_DIR holding the pinned npm:pyodide."""
    return Path.home() / ".cache" / "dspex" / "deno"


def pyodide_dir(deno_dir: Path | None = None) -> Path:
    """The folder of the pinned Pyodide package inside a DENO_DIR."""
    base = deno_dir or default_deno_dir()
    return base / "npm" / "registry.npmjs.org" / "pyodide" / PYODIDE_VERSION


def find_deno() -> str:
    """The Deno binary of the ``deno`` PyPI package, else one on PATH; a clear error if neither."""
    try:
        from deno import find_deno_bin

        return str(find_deno_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("deno")
    if found is None:
        raise SandboxStartupError(f"Deno is not installed: `pip install deno=={DENO_VERSION}`, or {FIX}")
    return found


def deno_env(deno_dir: Path) -> dict[str, str]:
    """The whole environment a Deno process gets: no variable of the host leaks in."""
    return {
        "DENO_DIR": str(deno_dir),
        "DENO_NO_UPDATE_CHECK": "1",
        "DENO_NO_PACKAGE_JSON": "1",
        "NO_COLOR": "1",
    }


def missing_files(deno_dir: Path | None = None) -> list[str]:
    """The Pyodide files the sandbox needs that the cache lacks (empty when complete)."""
    folder = pyodide_dir(deno_dir)
    return [name for name in PYODIDE_FILES if not (folder / name).is_file()]


def check_installed(deno_dir: Path | None = None) -> None:
    """Raise :class:`SandboxStartupError` naming the fix if the cached Pyodide is incomplete."""
    missing = missing_files(deno_dir)
    if missing:
        raise SandboxStartupError(
            f"Pyodide {PYODIDE_VERSION} is not in the sandbox cache {deno_dir or default_deno_dir()} "
            f"(missing {', '.join(missing)}): {FIX}"
        )


def ensure_installed(deno_dir: Path | None = None) -> Path:
    """Fetch the pinned npm:pyodide into ``deno_dir`` unless it is already there; returns the dir."""
    deno_dir = deno_dir or default_deno_dir()
    if not missing_files(deno_dir):
        return deno_dir
    deno_dir.mkdir(parents=True, exist_ok=True)
    command = [find_deno(), "cache", "--no-config", "--no-lock", "--node-modules-dir=none", str(RUNNER_PATH)]
    try:
        done = subprocess.run(
            # the one networked step: the host's proxy and CA settings apply (DENO_CERT, SSL_CERT_FILE...)
            command,
            env={**os.environ, **deno_env(deno_dir)},
            capture_output=True,
            text=True,
            timeout=_CACHE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxStartupError(f"`deno cache` did not finish in {_CACHE_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise SandboxStartupError(f"`{' '.join(command)}` failed: {done.stderr.strip()[-2000:]}")
    check_installed(deno_dir)
    return deno_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m dspex.sandbox.install [--check] [--deno-dir DIR]``."""
    parser = argparse.ArgumentParser(description="Cache Deno's npm:pyodide for the offline sandbox")
    parser.add_argument("--check", action="store_true", help="only report whether the cache is complete")
    parser.add_argument("--deno-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.check:
            check_installed(args.deno_dir)
            deno_dir = args.deno_dir or default_deno_dir()
        else:
            deno_dir = ensure_installed(args.deno_dir)
        find_deno()
    except SandboxStartupError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    print(f"sandbox: Deno {DENO_VERSION} + Pyodide {PYODIDE_VERSION} ready in {deno_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``dspex.utils.lazy_import`` (DSPy's ``dspy.utils.lazy_import``): optional packages loaded on first use."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from dspex.utils import lazy_import
from dspex.utils.lazy_import import _MissingModule, is_available, require


def _write_module(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


def test_is_available_finds_a_module_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(tmp_path, "dspex_probe_only", "VALUE = 1\n")
    monkeypatch.syspath_prepend(tmp_path)
    assert is_available("dspex_probe_only") is True
    assert "dspex_probe_only" not in sys.modules
    assert is_available("dspex_no_such_package_here") is False


def test_require_defers_the_import_to_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "dspex_lazy_target", "LOADED = True\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "dspex_lazy_target", raising=False)

    proxy = require("dspex_lazy_target")
    assert "dspex_lazy_target" not in sys.modules
    assert proxy.double(21) == 42
    assert sys.modules["dspex_lazy_target"].LOADED is True


def test_an_imported_module_is_returned_as_it_is() -> None:
    assert require("json") is sys.modules["json"]


def test_writing_through_the_proxy_sets_the_real_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_module(tmp_path, "dspex_lazy_setting", "level = 'low'\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "dspex_lazy_setting", raising=False)

    proxy = require("dspex_lazy_setting")
    proxy.level = "high"
    assert sys.modules["dspex_lazy_setting"].level == "high"


def test_concurrent_first_use_imports_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "imports.log"
    body = (
        "import time\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write('x')\n"
        "time.sleep(0.2)  # a slow module body: other threads arrive while it runs\n"
        "READY = 'yes'\n"
    )
    _write_module(tmp_path, "dspex_lazy_slow", body)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "dspex_lazy_slow", raising=False)

    proxy = require("dspex_lazy_slow")
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(proxy.READY)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == ["yes"] * 6
    assert log.read_text() == "x"


def test_a_missing_package_fails_on_use_naming_what_to_install_and_who_asked() -> None:
    stub = require("dspex_absent_pkg.sub", feature="dspex.SomeFeature")  # the module is not imported yet
    assert isinstance(stub, _MissingModule)
    with pytest.raises(ImportError) as raised:
        _ = stub.anything
    message = str(raised.value)
    assert "dspex_absent_pkg is required to use dspex.SomeFeature" in message
    assert "pip install dspex_absent_pkg" in message
    assert __file__ in message and "test_a_missing_package_fails_on_use" in message


def test_an_extra_is_named_as_a_dspex_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImportError, match=r"pip install dspex\[tracing\]"):
        _ = require("dspex_absent_pkg", extra="tracing").anything
    monkeypatch.setitem(lazy_import._INSTALL_HINTS, "dspex_absent_pkg", "mcp")
    with pytest.raises(ImportError, match=r"pip install dspex\[mcp\]"):
        _ = require("dspex_absent_pkg").anything  # a package one of our extras installs

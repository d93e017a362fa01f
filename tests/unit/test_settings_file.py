from __future__ import annotations

import sys
from pathlib import Path

import pytest

import dspex
from dspex.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _restore_defaults() -> object:
    yield
    dspex.configure(lm=None, adapter=None, callbacks=[], track_usage=False)


def test_saved_settings_come_back_with_their_lm_adapter_and_callbacks(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    dspex.configure(
        lm=dspex.LM("openai/gpt-4o-mini", temperature=0.3),
        adapter=dspex.JSONAdapter(),
        callbacks=[lambda value: value * 3],
        track_usage=True,
    )
    dspex.settings.save(path, exclude_keys=["track_usage"])
    dspex.configure(lm=None, adapter=None, callbacks=[], track_usage=False)

    dspex.configure(**dspex.load_settings(path, allow_pickle=True))
    assert dspex.settings.lm.model == "openai/gpt-4o-mini"
    assert dspex.settings.lm.kwargs["temperature"] == 0.3
    assert isinstance(dspex.settings.adapter, dspex.JSONAdapter)
    assert dspex.settings.callbacks[0](5) == 15
    assert dspex.settings.track_usage is False  # excluded, so the value set after saving stays


def test_an_api_key_given_to_an_lm_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    dspex.configure(lm=dspex.LM("openai/gpt-4o-mini", api_key="sk-never-on-disk-123"))
    dspex.settings.save(path)
    assert b"sk-never-on-disk-123" not in path.read_bytes()


def test_a_module_saved_by_value_loads_where_it_cannot_be_imported(tmp_path: Path) -> None:
    (tmp_path / "scaler_mod_for_settings.py").write_text("def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import scaler_mod_for_settings  # type: ignore[import-not-found]

        dspex.configure(callbacks=[scaler_mod_for_settings.triple])
        dspex.settings.save(tmp_path / "s.pkl", modules_to_serialize=[scaler_mod_for_settings])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("scaler_mod_for_settings", None)
    loaded = dspex.load_settings(tmp_path / "s.pkl", allow_pickle=True)
    assert loaded["callbacks"][0](7) == 21


def test_loading_needs_allow_pickle_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.pkl"
    dspex.settings.save(path)
    with pytest.raises(
        ConfigurationError, match=r"settings\.pkl: loading \.pkl files can run arbitrary code"
    ):
        dspex.load_settings(path)
    with pytest.raises(ValueError, match="allow_pickle=True"):  # a ValueError, as DSPy raises
        dspex.settings.load(path)


def test_an_unpicklable_setting_is_named_with_the_way_out(tmp_path: Path) -> None:
    import threading

    dspex.configure(callbacks=[threading.Lock()])
    with pytest.raises(
        ConfigurationError,
        match=r"setting 'callbacks' \(list\) cannot be pickled.*exclude_keys=\['callbacks'\]",
    ):
        dspex.settings.save(tmp_path / "s.pkl")
    assert not (tmp_path / "s.pkl").exists()

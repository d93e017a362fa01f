"""A GEPA run's checkpoint: gepa's state and every generator it draws from, as versioned JSON.

    saved = GEPARunState.capture(parts, state, adapter, max_metric_calls=120)
    data = saved.to_dict()                     # JSON data, in OptimizerRun.state_dict()["state"]
    state = GEPARunState.from_dict(data).restore(parts, adapter)

``gepa_state`` holds the fields of gepa's ``GEPAState`` (candidates, parents, per-example scores,
the Pareto fronts, the iteration, the metric calls spent, the trace) with sets, tuples and dicts
with non-text keys in a small tagged form (``{"__set__": [...]}``, ``{"__tuple__": [...]}``,
``{"__items__": [[key, value], ...]}``), so they come back exactly; ``rng`` and ``adapter_rng`` are
the states of the generator gepa's selector, sampler and merge proposer share and of the adapter's,
``sampler`` the epoch bookkeeping of gepa's batch sampler and ``merge`` the merge proposer's
counters. With these, a resumed run draws what the uninterrupted one would have drawn.

Not kept: gepa's evaluation cache (dspex does not turn it on) and, with ``track_best_outputs``, the
outputs themselves (program predictions, not JSON): a resumed run keeps only the outputs of the
candidates it evaluates after the restart.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gepa.core.state import GEPAState
from pydantic import BaseModel, ConfigDict

from dspex.errors import ConfigurationError
from dspex.optimizers.gepa.engine import EngineParts

__all__ = [
    "GEPA_STATE_VERSION",
    "RUN_FILE",
    "GEPARunState",
    "decode_value",
    "encode_value",
    "load_run_file",
    "save_run_file",
]

# The checkpoint a run with ``log_dir`` writes after every round (dspex's JSON, never gepa's pickle).
RUN_FILE = "dspex_gepa_run.json"

GEPA_STATE_VERSION = 1

# GEPAState attributes that are not part of a checkpoint (see the module).
_NOT_KEPT = frozenset({"_budget_hooks", "evaluation_cache", "best_outputs_valset"})
_SAMPLER_FIELDS = ("shuffled_ids", "epoch", "last_trainset_size", "_current_iteration", "_calls_in_iteration")
_MERGE_FIELDS = ("merges_due", "total_merges_tested", "last_iter_found_new_program", "merges_performed")


class GEPARunState(BaseModel):
    """GEPA's part of ``OptimizerRun.state_dict()`` (see the module). ``gepa_state`` is None
    before the seed was evaluated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = GEPA_STATE_VERSION
    max_metric_calls: int
    gepa_state: dict[str, Any] | None = None
    rng: Any = None
    adapter_rng: Any = None
    sampler: dict[str, Any] | None = None
    merge: dict[str, Any] | None = None

    @classmethod
    def capture(cls, parts: EngineParts, state: Any, adapter: Any, *, max_metric_calls: int) -> GEPARunState:
        """The checkpoint of a run between two iterations (``state`` None: before the seed)."""
        return cls(
            max_metric_calls=max_metric_calls,
            gepa_state=None if state is None else _state_fields(state),
            rng=encode_value(parts.rng.getstate()),
            adapter_rng=encode_value(adapter.rng.getstate()),
            sampler=_sampler_fields(parts.sampler),
            merge=None
            if parts.merge is None
            else {n: encode_value(getattr(parts.merge, n)) for n in _MERGE_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GEPARunState:
        """The checkpoint in ``data``; ConfigurationError for another version or unknown fields."""
        version = data.get("version")
        if version != GEPA_STATE_VERSION:
            raise ConfigurationError(
                f"GEPA checkpoint version {version!r}; this dspex reads version {GEPA_STATE_VERSION}"
            )
        return cls.model_validate(dict(data))

    def restore(self, parts: EngineParts, adapter: Any) -> Any:
        """Put the generators and counters back into ``parts`` and ``adapter``; gepa's state (None
        when the seed was not evaluated yet)."""
        parts.rng.setstate(decode_value(self.rng))
        adapter.rng.setstate(decode_value(self.adapter_rng))
        if self.sampler is not None:
            for name, value in self.sampler.items():
                setattr(parts.sampler, name, decode_value(value))
            parts.sampler.id_freqs = Counter(parts.sampler.shuffled_ids)
        if self.merge is not None and parts.merge is not None:
            for name, value in self.merge.items():
                setattr(parts.merge, name, decode_value(value))
        return None if self.gepa_state is None else _rebuild_state(self.gepa_state)


def _state_fields(state: Any) -> dict[str, Any]:
    return {name: encode_value(value) for name, value in vars(state).items() if name not in _NOT_KEPT}


def _rebuild_state(fields: Mapping[str, Any]) -> Any:
    state = GEPAState.__new__(GEPAState)  # gepa's own load does the same with its pickle's dict
    state.__dict__.update({name: decode_value(value) for name, value in fields.items()})
    state.evaluation_cache = None
    state.best_outputs_valset = None
    return state


def _sampler_fields(sampler: Any) -> dict[str, Any] | None:
    if not all(hasattr(sampler, name) for name in _SAMPLER_FIELDS):
        return None  # a batch sampler of the user's own: its state is its own business
    return {name: encode_value(getattr(sampler, name)) for name in _SAMPLER_FIELDS}


# --------------------------------------------------------------------------- the tagged JSON form


def encode_value(value: Any) -> Any:
    """``value`` as JSON data that :func:`decode_value` turns back into an equal value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode_value(item) for item in value]
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(item) for item in value]}
    if isinstance(value, set | frozenset):
        return {"__set__": [encode_value(item) for item in sorted(value, key=repr)]}
    if isinstance(value, Mapping):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: encode_value(item) for key, item in value.items()}
        return {"__items__": [[encode_value(key), encode_value(item)] for key, item in value.items()]}
    raise ConfigurationError(f"a GEPA checkpoint cannot hold a {type(value).__name__} ({value!r:.80})")


def decode_value(data: Any) -> Any:
    """The value :func:`encode_value` encoded."""
    if isinstance(data, list):
        return [decode_value(item) for item in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        ((tag, items),) = data.items()
        if tag == "__tuple__":
            return tuple(decode_value(item) for item in items)
        if tag == "__set__":
            return {decode_value(item) for item in items}
        if tag == "__items__":
            return {_hashable(decode_value(key)): decode_value(item) for key, item in items}
    return {key: decode_value(item) for key, item in data.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def load_run_file(log_dir: str | None) -> dict[str, Any] | None:
    """The checkpoint a compile with this ``log_dir`` left (None: none yet)."""
    if log_dir is None:
        return None
    path = Path(log_dir) / RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def save_run_file(log_dir: str | None, state: Mapping[str, Any]) -> None:
    """Write the checkpoint to ``log_dir`` (write, then rename: never half a file)."""
    if log_dir is None:
        return
    directory = Path(log_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, directory / RUN_FILE)

"""How long the pipeline's topics keep what they hold, set per class of topic.

``dspex topics create --retention CLASS=DURATION`` (repeatable) turns into Kafka topic settings:

========== ==================================== ==============================================
class      topics                               what DURATION sets
========== ==================================== ==============================================
work       tasks, predictions, submit,          ``retention.ms``: examples, outputs, traces and
           lm-requests                          prompts in flight
results    jobs, scores                         ``retention.ms`` (what ``dspex results`` reads),
                                                and ``delete.retention.ms`` of status: a purged
                                                job's tombstone outlives its job record
dlq        dlq                                  ``retention.ms``: poison messages, as received
blobs      blobs                                ``retention.ms`` (compacted and deleted)
workers    workers                              ``retention.ms`` of heartbeats
state      status, candidates, optimizer-state, ``max.compaction.lag.ms``: compacted, kept
           lm-responses, lm-batches             until purged; this bounds how long a purged
                                                value stays on disk before the log cleaner
                                                removes it
========== ==================================== ==============================================

Unset, a topic keeps its defaults (:mod:`dspex.streams.topics`; the broker's ``log.retention.hours``,
Kafka's default 168, for the classes without one). ``forever`` keeps records of a deleting
class without a time limit. Durations: ``90s``, ``30m``, ``12h``, ``7d``, ``2w``.

    >>> retention_config(parse_retention(["results=30d", "state=1d"]))["scores"]
    {'retention.ms': '2592000000'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal, get_args

from dspex.errors import ConfigurationError
from dspex.streams.topics import TopicRole

__all__ = [
    "RETENTION_CLASSES",
    "RetentionClass",
    "describe_duration",
    "parse_duration",
    "parse_retention",
    "retention_config",
]

RetentionClass = Literal["work", "results", "dlq", "blobs", "workers", "state"]
RETENTION_CLASSES: dict[RetentionClass, tuple[TopicRole, ...]] = {
    "work": ("tasks", "predictions", "submit", "lm-requests"),
    "results": ("jobs", "scores"),
    "dlq": ("dlq",),
    "blobs": ("blobs",),
    "workers": ("workers",),
    "state": ("status", "candidates", "optimizer-state", "lm-responses", "lm-batches"),
}
FOREVER = -1
_CENTURY_MS = 100 * 365 * 86_400_000  # how long tombstones stay when job records stay forever
_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str) -> int:
    """Milliseconds of ``90s``, ``30m``, ``12h``, ``7d`` or ``2w`` (-1 for ``forever``)."""
    if text.strip().lower() == "forever":
        return FOREVER
    found = _DURATION.match(text.lower())
    if found is None or int(found.group(1)) == 0:
        raise ConfigurationError(
            f"retention {text!r} is not a duration: write a positive number and a unit, s m h d or w "
            "(e.g. 7d), or 'forever'"
        )
    return int(found.group(1)) * _UNITS_MS[found.group(2)]


def describe_duration(ms: int) -> str:
    """``ms`` in the largest whole unit (``7d``, ``36h``), or ``forever``."""
    if ms < 0:
        return "forever"
    for unit in ("d", "h", "m"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms / 1000:g}s"


def parse_retention(items: Iterable[str]) -> dict[RetentionClass, int]:
    """``["results=30d", ...]`` as class -> milliseconds; ConfigurationError naming a bad item."""
    parsed: dict[RetentionClass, int] = {}
    classes: tuple[str, ...] = get_args(RetentionClass)
    for item in items:
        name, sign, duration = item.partition("=")
        name = name.strip().lower()
        if not sign or name not in classes:
            raise ConfigurationError(
                f"retention {item!r}: write CLASS=DURATION with CLASS one of {', '.join(classes)}"
            )
        ms = parse_duration(duration)
        if ms == FOREVER and name == "state":
            raise ConfigurationError("state topics are compacted, kept until purged: give state a duration")
        parsed[name] = ms  # type: ignore[index]  # checked against the Literal's values above
    return parsed


def retention_config(retention: Mapping[RetentionClass, int]) -> dict[str, dict[str, str]]:
    """The topic settings per role that ``retention`` asks for (see the module docs)."""
    config: dict[str, dict[str, str]] = {}
    for name, ms in retention.items():
        key = "max.compaction.lag.ms" if name == "state" else "retention.ms"
        for role in RETENTION_CLASSES[name]:
            config.setdefault(role, {})[key] = str(ms)
    results = retention.get("results")
    if results is not None:
        tombstones = _CENTURY_MS if results == FOREVER else results
        config.setdefault("status", {})["delete.retention.ms"] = str(tombstones)
    return config

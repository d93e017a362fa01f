"""What `dspex status` prints: every job oldest first with times and ages, the workers, the lag of
every worker group (intake included); or one job in detail. Submit time is when the cluster first
saw the job (its status's ``started_at``), the nearest the status topic keeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dspex.cli._ids import SHORT_ID, ResolvedJob, age, duration, short_ids, submitted_at
from dspex.cli.batches import JobBatches, describe, read_batches, with_cost
from dspex.client import Client
from dspex.client.progress import running_score
from dspex.errors import DspexError
from dspex.schemas import JobStatus, WorkerHeartbeat
from dspex.streams.admin import GroupLag, KafkaAdmin

__all__ = ["ALIVE_AFTER_S", "describe_job", "describe_overview", "job_batches", "overview"]

ALIVE_AFTER_S = 30.0
"""A worker whose last heartbeat is older than this is shown as not alive."""
INTAKE_GROUP_SUFFIX = "intake"
"""The intake worker's consumer group after the prefix (``dspex worker intake``)."""


def overview(client: Client) -> dict[str, Any]:
    """Every job (oldest first), every worker's latest heartbeat, the lag of each worker group."""
    now = datetime.now(UTC)
    statuses = sorted(client.jobs().values(), key=_submit_order)
    workers = [_worker_row(beat, now) for beat in client.workers()]
    return {
        "jobs": [_job_row(status, now) for status in statuses],
        "workers": workers,
        "lag": _lag(client),
    }


def _lag(client: Client) -> dict[str, Any]:
    try:
        lag: dict[str, Any] = {kind: _lag_row(found) for kind, found in client.lag().items()}
    except DspexError as exc:
        return {"error": str(exc)}
    lag["intake"] = _intake_lag(client)
    return lag


def _intake_lag(client: Client) -> dict[str, Any]:
    """The intake worker's group on the submit topic, read on its own: a cluster whose topics
    predate the submit topic still shows the other groups."""
    group = client.registry.prefix + INTAKE_GROUP_SUFFIX
    admin = KafkaAdmin(client.settings, timeout=client.connect_timeout)
    try:
        return _lag_row(admin.group_lag(group, [client.registry.name("submit")]))
    except DspexError as exc:
        return {"group": group, "total": None, "by_topic": {}, "error": str(exc)}
    finally:
        admin.close()


def _lag_row(found: GroupLag) -> dict[str, Any]:
    return {"group": found.group, "total": found.total, "by_topic": found.by_topic()}


def _submit_order(status: Any) -> tuple[datetime, str]:
    # Oldest first, ties by id: the same order on every call.
    return (submitted_at(status) or datetime.min.replace(tzinfo=UTC), status.job_id)


def _job_row(status: Any, now: datetime) -> dict[str, Any]:
    started = submitted_at(status)
    age_s = None if started is None else round((now - started).total_seconds(), 1)
    idle_s = round((now - status.updated_at).total_seconds(), 1)
    return {**status.model_dump(mode="json"), "age_s": age_s, "updated_age_s": idle_s}


def _worker_row(beat: WorkerHeartbeat, now: datetime) -> dict[str, Any]:
    age = (now - beat.sent_at).total_seconds()
    return {**beat.model_dump(mode="json"), "age_s": round(age, 1), "alive": age <= ALIVE_AFTER_S}


def job_batches(client: Client, found: ResolvedJob) -> JobBatches | None:
    """A running evaluation's LM requests in provider batches now, as `dspex batches --job` reads
    them (None: it has none, it is not a running evaluation, or the checkpoints cannot be read)."""
    status = found.status
    if not isinstance(status, JobStatus) or status.finished:
        return None
    try:
        jobs = read_batches(client.settings, client.registry.prefix)
    except (DspexError, TimeoutError):
        return None  # a cluster without the provider-batch topics still shows the rest
    job = jobs.get(found.job_id)
    return None if job is None else with_cost(job, status)


def describe_job(found: ResolvedJob, now: datetime, batches: JobBatches | None = None) -> str:
    """One job: state, times, progress and per-candidate scores (or steps of an optimization);
    ``batches``: its LM requests in provider batches (:func:`job_batches`)."""
    status = found.status
    if status is None:
        return (
            f"job {found.job_id}: submitted, no status yet (no aggregator or optimizer worker has "
            "picked it up: `dspex status` shows the workers alive)"
        )
    lines = [f"job {status.job_id}{f' ({status.name})' if status.name else ''}: {status.state}"]
    if getattr(status, "parent_job_id", None):
        lines.append(f"  part of: optimization {status.parent_job_id}")
    lines.append("  " + _times(status, now))
    if status.reason:
        lines.append(f"  reason: {status.reason}")
    if isinstance(status, JobStatus):
        lines.append(
            f"  progress: {status.done}/{status.total_tasks} tasks, {status.errors} errors, "
            f"score {running_score(status):.2f}%, {status.usage.total_tokens:,} tokens, "
            f"${status.usage.cost_usd:.4f}"
        )
        if status.unreported_note is not None:
            lines.append(f"  {status.unreported_note}")
        if batches is not None:
            lines.append(f"  provider batches ({batches.model}): {describe(batches)}")
        for c in status.candidates:
            lines.append(
                f"  candidate {c.candidate_id[:16]}: {c.score:.2f}% ({c.done}/{c.total}, {c.errors} errors)"
            )
    else:
        lines.append(f"  optimizer {status.optimizer}: {len(status.steps)} steps, best {status.best_score}")
        if status.unreported_note is not None:  # an owner was killed mid-step
            lines.append(f"  {status.unreported_note}")
    return "\n".join(lines)


def _times(status: Any, now: datetime) -> str:
    started = submitted_at(status)
    parts = [f"started {_clock(started)} ({age(started, now)} ago)"]
    if status.finished_at is not None:
        parts.append(f"finished {_clock(status.finished_at)} (took {age(started, status.finished_at)})")
    else:
        parts.append(f"updated {age(status.updated_at, now)} ago")
    return ", ".join(parts)


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe_overview(overview: dict[str, Any]) -> str:
    """The text form of :func:`overview`."""
    jobs = overview["jobs"]
    short = short_ids(job["job_id"] for job in jobs)
    lines = [f"jobs ({len(jobs)}, oldest first):"]
    if jobs:
        lines.append(
            f"  {'JOB':<{SHORT_ID}}  {'KIND':<8}  {'STATE':<9}  {'PROGRESS':>13}  "
            f"{'STARTED':<20}  {'AGE':>7}  {'UPDATED':>7}  NAME"
        )
    for job in jobs:
        lines.append(_overview_line(job, short[job["job_id"]]))
    alive = [w for w in overview["workers"] if w["alive"]]
    lines.append(f"workers alive ({len(alive)} of {len(overview['workers'])} seen):")
    for w in overview["workers"]:
        state = "alive" if w["alive"] else f"silent {w['age_s']:.0f} s"
        # a predictor's window: how many tasks it lets run now (its LM limit may read higher)
        window = f" of {w['dispatch_window']}" if w.get("dispatch_window") is not None else ""
        lines.append(
            f"  {w['kind']:<9} {w['worker_id']}  {w['host']}:{w['pid']}  "
            f"in flight {w['in_flight']}{window}  {state}"
        )
    lines.append("lag per group:")
    if "error" in overview["lag"]:
        lines.append(f"  unavailable: {overview['lag']['error']}")
    for kind, found in overview["lag"].items():
        if kind != "error":
            total = found["total"] if found["total"] is not None else f"unavailable: {found.get('error')}"
            lines.append(f"  {found['group']:<30} {total}")
    return "\n".join(lines)


def _overview_line(job: dict[str, Any], short: str) -> str:
    if job.get("kind") == "optimize":
        done = f"{len(job.get('steps') or [])} trials"
    else:
        done = f"{job.get('done', '-')}/{job.get('total_tasks', '-')}"
    started = job.get("started_at") or job.get("updated_at")
    moment = datetime.fromisoformat(started) if isinstance(started, str) else None
    name = job.get("name") or ""
    if job.get("parent_job_id"):
        name = f"{name} (in {job['parent_job_id'][:SHORT_ID]})".strip()
    return (
        f"  {short:<{SHORT_ID}}  {job.get('kind', 'eval'):<8}  {job['state']:<9}  {done:>13}  "
        f"{_clock(moment):<20}  {duration(job.get('age_s')):>7}  {duration(job.get('updated_age_s')):>7}  "
        f"{name}"
    )

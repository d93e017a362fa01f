"""`dspex purge JOB`: delete a job's records where Kafka allows it.

What goes, as tombstones on the compacted topics (readers drop the key at once; the log cleaner
removes the old values from disk within the state topics' ``max.compaction.lag.ms``, see
:mod:`dspex.streams.retention`):

- ``status``: the job's and, for an optimization, its sub-evaluations' statuses (so `dspex status`,
  `dspex results` and the dashboard no longer know them);
- ``optimizer-state``: an optimization's checkpoint;
- ``candidates``: the programs only these jobs used (an optimization's best program too); a
  program another job on the status topic names is kept;
- ``lm-responses``: the provider-batch answers to these jobs' LM requests (keyed by request hash),
  found by the job id header of ``lm-requests`` records and of the answers themselves
  (:mod:`dspex.cli._tombstones`). An answer another job's identical request got too is deleted all
  the same: it is a cache entry, and that job asks the provider again if it runs again.

What stays until its topic's retention ends, because Kafka deletes records of a non-compacted topic
only by age, whole segments at a time: the job record (``jobs``), its tasks with their examples
(``tasks``, and ``submit`` for a Kafka-native submission), predictions with outputs and traces
(``predictions``), scores (``scores``), dead letters (``dlq``), large example values (``blobs``),
and a provider batch's parked requests with their prompts (``lm-requests``). The command lists them
with their retention. An answer written before answers carried a job id header, whose request
has left ``lm-requests`` by retention, can no longer be told apart and stays.

A job still running (or submitted with no status yet) is refused unless ``--force``, which cancels
it and waits for its final status first.

Before any tombstone, purge sends a :class:`~dspex.schemas.PurgeJob` per job on the jobs topic. The
aggregator, which would otherwise send a finished job's status again when a late attempt of it is
charged or a Cancel for it arrives (up to 10 minutes after its end), drops the job's state on
reading it, tombstones the status itself after any status it sent before, and ignores the job's
records for those 10 minutes; workers treat the job as stopped. purge's own status tombstones
take effect at once, with or without a running aggregator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail
from dspex.cli._tombstones import JobAnswers, job_answers
from dspex.cli._topic_configs import read_topic_configs
from dspex.cli.jobs import client_for, resolve
from dspex.client import Client
from dspex.errors import JobError
from dspex.schemas.jobs import PurgeJob
from dspex.schemas.status import JobStatus, OptimizeStatus
from dspex.streams.config import DEFAULT_BOOTSTRAP
from dspex.streams.producer import AsyncProducer
from dspex.streams.retention import describe_duration
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry, TopicRole

__all__ = ["PurgePlan", "plan_purge", "purge_command", "register"]

RETAINED_ROLES: tuple[TopicRole, ...] = (
    "jobs",
    "tasks",
    "submit",
    "predictions",
    "scores",
    "dlq",
    "blobs",
    "lm-requests",
)
"""Topics whose records of a job stay until their retention ends."""
_FORCE_WAIT_S = 120.0

Status = JobStatus | OptimizeStatus


@dataclass(frozen=True)
class PurgePlan:
    """What one purge deletes: ``job_ids`` (the job first, then its sub-jobs) from status, the
    optimizations' checkpoints, and ``candidates``; ``shared``: candidates kept for other jobs."""

    job_ids: tuple[str, ...]
    optimizations: tuple[str, ...]
    candidates: tuple[str, ...]
    shared: tuple[str, ...]


def plan_purge(job_id: str, statuses: Mapping[str, Any]) -> PurgePlan:
    """The records of ``job_id`` and its sub-jobs, given every job's latest status."""
    status = statuses.get(job_id)
    subs = _sub_jobs(job_id, status, statuses.values())
    purged = [job_id, *subs]
    used = {c for jid in purged for c in _candidates_of(statuses.get(jid))}
    others = {c for jid, other in statuses.items() if jid not in purged for c in _candidates_of(other)}
    optimizations = tuple(j for j in purged if isinstance(statuses.get(j), OptimizeStatus))
    return PurgePlan(
        job_ids=tuple(purged),
        optimizations=optimizations,
        candidates=tuple(sorted(used - others)),
        shared=tuple(sorted(used & others)),
    )


def _sub_jobs(job_id: str, status: Any, every: Iterable[Any]) -> list[str]:
    found = [s.job_id for s in every if getattr(s, "parent_job_id", None) == job_id]
    if isinstance(status, OptimizeStatus):
        found += [step.eval_job_id for step in status.steps if step.eval_job_id]
    return sorted(set(found) - {job_id})


def _candidates_of(status: Any) -> set[str]:
    if isinstance(status, JobStatus):
        return {c.candidate_id for c in status.candidates}
    if isinstance(status, OptimizeStatus):
        named = {step.candidate_id for step in status.steps}
        return named | ({status.best_candidate_id} if status.best_candidate_id else set())
    return set()


def purge_command(
    job: Annotated[str, typer.Argument(metavar="JOB", help="A job id, or its first characters.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Cancel a job still running (and wait for it to end) first.")
    ] = False,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Delete a job's records from the compacted topics (its status, an optimization's sub-jobs and
    checkpoint, programs no other job uses) and list what stays until retention ends.

    A running job is refused unless --force, which cancels it first.
    """
    with client_for(bootstrap, prefix) as client:
        found = resolve(client, job, submitted=True)
        job_id = found.job_id
        statuses: dict[str, Any] = client.jobs()
        plan = plan_purge(job_id, statuses)
        running = [j for j in plan.job_ids if j in statuses and not statuses[j].finished]
        if found.status is None or running:
            if not force:
                what = "has no status yet" if found.status is None else f"is {found.status.state}"
                fail(f"job {job_id} {what}; cancel it first, or pass --force to cancel it and purge")
            statuses = _cancel_and_wait(client, job_id, running)
            plan = plan_purge(job_id, statuses)
        answers = _answers_of(client, plan)
        typer.echo(_describe_plan(plan, client.registry, answers))
        if not yes:
            typer.confirm("purge these records?", abort=True)
        asyncio.run(_purge(client, plan, answers))
        retained = _retained(client)
    typer.echo(_summary(plan, answers, retained))


def _answers_of(client: Client, plan: PurgePlan) -> JobAnswers:
    registry = client.registry
    return job_answers(
        client.settings, registry.name("lm-requests"), registry.name("lm-responses"), plan.job_ids
    )


def _cancel_and_wait(client: Client, job_id: str, running: list[str]) -> dict[str, Any]:
    reason = "purged with `dspex purge --force`"
    for target in dict.fromkeys([job_id, *running]):
        client.cancel(target, reason)
    for target in dict.fromkeys([job_id, *running]):
        try:
            client.wait(target, timeout=_FORCE_WAIT_S)
        except JobError as exc:
            fail(f"job {target} was cancelled but did not end: {exc}; nothing was purged")
    jobs: dict[str, Any] = client.jobs()
    return jobs


async def _purge(client: Client, plan: PurgePlan, answers: JobAnswers) -> None:
    """The PurgeJobs, acknowledged by the broker, then the tombstones."""
    registry = client.registry
    records: list[tuple[TopicRole, str]] = [("status", j) for j in plan.job_ids]
    records += [("optimizer-state", j) for j in plan.optimizations]
    records += [("candidates", c) for c in plan.candidates]
    records += [("lm-responses", h) for h in answers.keys]
    async with AsyncProducer(client.settings) as producer:
        # First, so that the aggregator stops writing these statuses back (a late charge, a Cancel).
        notices = [to_record(PurgeJob(job_id=j), role="jobs") for j in plan.job_ids]
        sent = [
            await producer.send(registry.name("jobs"), r.value, key=r.key, headers=r.headers) for r in notices
        ]
        await asyncio.gather(*sent)
        sent = [await producer.send(registry.name(role), None, key=key) for role, key in records]
        await asyncio.gather(*sent)  # every tombstone acknowledged by the broker


def _retained(client: Client) -> dict[str, str]:
    topics = [client.registry.name(role) for role in RETAINED_ROLES]
    configs = read_topic_configs(client.settings, topics, {"retention.ms"})
    return {topic: configs.get(topic, {}).get("retention.ms", "") for topic in topics}


def _describe_plan(plan: PurgePlan, registry: TopicRegistry, answers: JobAnswers) -> str:
    job_id, subs = plan.job_ids[0], plan.job_ids[1:]
    lines = [f"purge job {job_id}" + (f" and its {len(subs)} sub-jobs" if subs else "") + ":"]
    lines.append(f"  {registry.name('status')}: {len(plan.job_ids)} status(es)")
    if plan.optimizations:
        lines.append(f"  {registry.name('optimizer-state')}: {len(plan.optimizations)} checkpoint(s)")
    lines.append(f"  {registry.name('candidates')}: {len(plan.candidates)} program(s)")
    if plan.shared:
        lines.append(f"  kept: {len(plan.shared)} program(s) other jobs also use")
    if answers.keys:
        shared = f" ({len(answers.shared)} also asked by other jobs)" if answers.shared else ""
        lines.append(
            f"  {registry.name('lm-responses')}: {len(answers.keys)} provider-batch answer(s){shared}"
        )
    return "\n".join(lines)


def _summary(plan: PurgePlan, answers: JobAnswers, retained: Mapping[str, str]) -> str:
    total = len(plan.job_ids) + len(plan.optimizations) + len(plan.candidates) + len(answers.keys)
    lines = [f"purged job {plan.job_ids[0]}: {total} tombstone(s) written"]
    lines.append("  the aggregator ignores its late records (attempts, cancels) from now on")
    lines.append("still on topics that delete by age only (until their retention ends):")
    for topic, ms in retained.items():
        kept = describe_duration(int(ms)) if ms.lstrip("-").isdigit() else "unknown"
        lines.append(f"  {topic:<30} retention {kept}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add `dspex purge` to the root command."""
    app.command("purge", epilog="Example: dspex purge JOB --yes  |  dspex purge JOB --force --yes")(
        purge_command
    )

"""`dspex batches [--job J] [--json]`: batch-mode jobs' LM requests at the provider, and the saving.

Reads the provider-batch worker's checkpoints (``PREFIXlm-batches``, compacted) from the beginning,
without a consumer group, and shows per job how many of its LM requests wait to be submitted
(``queued``), how many the provider holds (``at provider``) in how many batches, and, from the job's
latest status, what it cost so far at batch prices and what the same calls would have cost online
(the saving: ``cost * (1 - share) / share``, the model's batch share from the price table, 0.5 unless
registered otherwise).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import typer

from dspex.cli._common import DEFAULT_PREFIX, BootstrapOption, PrefixOption, fail, probe_or_exit
from dspex.errors import DspexError
from dspex.lm.pricing import DEFAULT_PRICES
from dspex.schemas.provider_batch import ProviderBatchCheckpoint
from dspex.streams.config import DEFAULT_BOOTSTRAP, KafkaSettings
from dspex.streams.reader import CompactedReader
from dspex.streams.topics import TopicRegistry

__all__ = ["JobBatches", "describe", "read_batches", "register", "summarize", "with_cost"]

_READ_TIMEOUT_S = 30.0
_DEFAULT_SHARE = 0.5


@dataclass
class JobBatches:
    """One job's requests in provider batches now."""

    job_id: str
    model: str
    queued: int = 0
    at_provider: int = 0
    batches: set[str] = field(default_factory=set)
    cost_usd: float | None = None
    saving_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "batches": len(self.batches)}


def summarize(checkpoints: Iterable[ProviderBatchCheckpoint]) -> dict[str, JobBatches]:
    """Per job id: requests queued (checkpointed, not submitted) and at the provider, and batches."""
    jobs: dict[str, JobBatches] = {}
    for checkpoint in checkpoints:
        if checkpoint.state == "done":
            continue
        for parked in checkpoint.requests:
            job = jobs.setdefault(parked.job_id, JobBatches(parked.job_id, checkpoint.model))
            if checkpoint.state == "pending":
                job.queued += 1
            else:
                job.at_provider += 1
                job.batches.add(checkpoint.key)
    return jobs


def saving(model: str, cost_usd: float) -> float:
    """What calls that cost ``cost_usd`` at ``model``'s batch price would have cost more online."""
    price = DEFAULT_PRICES.price_of(model)
    share = price.batch_share if price is not None else _DEFAULT_SHARE
    return cost_usd * (1 - share) / share if share > 0 else 0.0


def read_batches(settings: KafkaSettings, prefix: str) -> dict[str, JobBatches]:
    """Per job id, its requests in provider batches now, from the checkpoints topic (blocking; a
    DspexError when the topic cannot be read, TimeoutError when it is not read in time)."""
    return summarize(asyncio.run(_read(settings, prefix)))


def with_cost(job: JobBatches, status: Any) -> JobBatches:
    """``job`` with the cost so far and the saving, from the job's latest status (None: unknown)."""
    usage = getattr(status, "usage", None)
    if usage is not None:
        job.cost_usd = float(usage.cost_usd)
        job.saving_usd = saving(job.model, job.cost_usd)
    return job


def describe(job: JobBatches) -> str:
    """One job's requests queued and at the provider, its batches and the saving, in words."""
    money = ""
    if job.cost_usd is not None and job.saving_usd is not None:
        money = f"; cost so far ${job.cost_usd:.4f}, saving ${job.saving_usd:.4f} against online"
    return f"{job.queued} queued, {job.at_provider} at the provider in {len(job.batches)} batches{money}"


async def _read(settings: KafkaSettings, prefix: str) -> list[ProviderBatchCheckpoint]:
    topic = TopicRegistry(prefix).name("lm-batches")
    reader: CompactedReader[ProviderBatchCheckpoint] = CompactedReader(
        settings, topic, decoder=ProviderBatchCheckpoint
    )
    async with reader:
        await reader.wait_caught_up(_READ_TIMEOUT_S)
        return list(reader.snapshot().values())


def _with_costs(jobs: dict[str, JobBatches], bootstrap: str, prefix: str) -> None:
    from dspex.client import Client  # the client is only needed here

    with Client(bootstrap, prefix=prefix) as client:
        for job in jobs.values():
            with_cost(job, client.status(job.job_id))


def batches_command(
    job: Annotated[str | None, typer.Option("--job", help="Only this job id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job.")] = False,
    bootstrap: BootstrapOption = DEFAULT_BOOTSTRAP,
    prefix: PrefixOption = DEFAULT_PREFIX,
) -> None:
    """Batch-mode jobs' LM requests queued and at the provider, batches in flight, and the saving."""
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    probe_or_exit(settings)
    try:
        jobs = read_batches(settings, prefix)
        if job is not None:
            jobs = {key: value for key, value in jobs.items() if key == job}
        _with_costs(jobs, bootstrap, prefix)
    except (DspexError, TimeoutError) as exc:
        fail(f"could not read the provider batches: {exc}")
    if as_json:
        for item in jobs.values():
            typer.echo(json.dumps(item.as_dict()))
        return
    if not jobs:
        typer.echo("no batch-mode requests in flight")
    for item in jobs.values():
        typer.echo(f"job {item.job_id} ({item.model}): {describe(item)}")


def register(app: typer.Typer) -> None:
    """Add `dspex batches` to the root command."""
    app.command("batches", epilog="Example: dspex batches --job 3f9a... --json")(batches_command)

"""The provider-batch worker: batch-mode tasks' LM requests through the provider's Batch API
(``dspex worker provider-batch``; not ``Module.batch``, which runs a program on many inputs online).

A predictor running a task of a batch-mode job answers the program's LM calls from the answers the
task carries (:mod:`dspex.lm.batch_mode`); at the first call without one it puts the request on
``<prefix>lm-requests`` (:class:`~dspex.schemas.provider_batch.ParkedLMRequest`, the task inside)
and commits the task: a parked example is held by no process. This worker, for each request
(consumer group ``<prefix>provider-batch``):

1. acknowledges a request it already holds (a redelivery) or whose job was cancelled or failed, and
   sends a task whose answer is already known (``<prefix>lm-responses``) straight back;
2. collects the others per endpoint and model for ``window_s``, splits them within the provider's
   limits (requests and bytes per batch), and writes each batch as a checkpoint
   (``<prefix>lm-batches``, keyed by a deterministic batch key) before the requests are committed;
3. submits the batch (:class:`~dspex.lm.provider_batch.ProviderBatchClient` looks for a batch with
   the same key first, so a worker killed between submitting and checkpointing submits nothing twice)
   and checkpoints its provider id;
4. polls it; once finished writes each answer to ``<prefix>lm-responses`` (keyed by request hash)
   and sends every waiting task back to ``<prefix>tasks`` with the answer added. The program runs
   again there and gets one LM call layer further (a program making N calls in sequence takes N
   rounds). A request the batch did not answer (expired, cancelled, 5xx) goes into a new batch, up
   to ``max_tries`` batches; then, like any request the provider refused, its task gets the
   provider's error, which fails that example only.

A worker that starts reads the checkpoints and goes on with the batches in flight. Run one
provider-batch worker per prefix: the checkpoints are not divided between workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Message
from pydantic import BaseModel

from dspex.errors import ConfigurationError, LMError, PoisonMessageError, SecurityPolicyError
from dspex.ids import content_id
from dspex.lm.batch_mode import ParkedCall
from dspex.lm.provider_batch import (
    BatchLimits,
    BatchRequest,
    BatchResult,
    ProviderBatchClient,
    batch_key,
)
from dspex.processors.common import Outcome, Worker, WorkerOptions
from dspex.schemas.base import utc_now
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY
from dspex.schemas.headers import HEADER_JOB_ID
from dspex.schemas.provider_batch import LMBatchAnswer, ParkedLMRequest, ProviderBatchCheckpoint, StoredAnswer
from dspex.schemas.tasks import Task
from dspex.streams.config import KafkaSettings
from dspex.streams.reader import CompactedReader
from dspex.streams.serde import to_record

__all__ = ["ProviderBatchOptions", "ProviderBatchWorker", "park", "parked_request"]

logger = logging.getLogger(__name__)

_Group = tuple[str, str | None, str]  # api_base, api_key_env, the model name the body sends
_Ident = tuple[str, str, int]  # request hash, task id, round: one parked request
RetryPolicyName = Literal["batch", "online"]
_READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ProviderBatchOptions:
    """How the provider-batch worker batches: ``window_s`` seconds of requests per batch at most,
    ``poll_s`` between looks at the batches in flight, the provider's ``limits``, and ``max_tries``
    batches a request may go through without an answer before its example fails. ``retry``: where a
    request its batch did not answer (expired, cancelled, 5xx) goes, a new batch or ("online") the
    provider's online endpoint at once, at the online price."""

    window_s: float = 5.0
    poll_s: float = 30.0
    limits: BatchLimits = field(default_factory=BatchLimits)
    max_tries: int = 3
    retry: RetryPolicyName = "batch"

    @classmethod
    def of(cls, options: WorkerOptions) -> ProviderBatchOptions:
        """The batching a worker's options (``--batch-*``) ask for."""
        limits = BatchLimits(max_requests=options.batch_max_requests, max_bytes=options.batch_max_bytes)
        retry: RetryPolicyName = "online" if options.batch_retry == "online" else "batch"
        return cls(options.batch_window, options.batch_poll, limits, options.batch_max_tries, retry)

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.poll_s <= 0 or self.max_tries < 1:
            raise ConfigurationError("batch window >= 0 s, poll interval > 0 s and max tries >= 1, please")


def parked_request(task: Task, call: ParkedCall) -> ParkedLMRequest:
    """The lm-requests value of ``task`` parked on ``call``."""
    return ParkedLMRequest(
        request_hash=call.request_hash,
        job_id=task.job_id,
        task_id=task.task_id,
        round=len(task.batch_answers or {}),
        api_base=call.api_base,
        model=call.model,
        api_key_env=call.api_key_env,
        body=call.body,
        task=task,
    )


async def park(worker: Worker, parked: ParkedLMRequest) -> None:
    """Put ``parked`` on the lm-requests topic and wait for the broker's acknowledgement."""
    await _send(worker, "lm-requests", parked, parked.request_hash)


async def _send(worker: Worker, role: Any, model: BaseModel, key: str, *, job_id: str | None = None) -> None:
    if worker.producer is None:
        raise ConfigurationError(f"the {worker.kind} worker is not running")
    record = to_record(model, key=key)
    if job_id is not None:  # an answer names the job that asked first: `dspex purge` finds it so
        record.headers.append((HEADER_JOB_ID, job_id.encode()))
    await worker.producer.produce_record(worker.registry.name(role), record)


class ProviderBatchWorker(Worker):
    """Collects parked LM requests into provider batches and sends answered tasks back (module docs)."""

    kind = "provider-batch"
    input_role = "lm-requests"
    input_model = ParkedLMRequest

    def __init__(
        self,
        settings: KafkaSettings,
        options: WorkerOptions | None = None,
        batching: ProviderBatchOptions | None = None,
    ) -> None:
        super().__init__(settings, options)
        self.batching = batching or ProviderBatchOptions.of(self.options)
        self._pending: dict[_Group, list[tuple[ParkedLMRequest, asyncio.Future[None]]]] = {}
        self._first_at: dict[_Group, float] = {}
        self._inflight: dict[str, ProviderBatchCheckpoint] = {}
        self._known: set[_Ident] = set()
        self._hash_at: dict[str, str] = {}  # request hash -> the key of the batch in flight asking it
        # Checkpoints change in one place at a time: collecting, submitting and finishing
        self._state = asyncio.Lock()
        self._answered: dict[str, StoredAnswer] = {}
        self._clients: dict[tuple[str, str | None], ProviderBatchClient] = {}
        self._wake = asyncio.Event()  # the collector: a group is full
        self._wake_poll = asyncio.Event()  # the poller: a batch waits to be submitted
        self.submitted = self.resumed = 0

    # ---- start -------------------------------------------------------------------------------
    async def open_caches(self, stack: AsyncExitStack) -> None:
        checkpoints = await _read_all(
            self.settings, self.registry.name("lm-batches"), ProviderBatchCheckpoint
        )
        for checkpoint in checkpoints.values():
            if checkpoint.state != "done":
                self._track(checkpoint)
        answers = await _read_all(self.settings, self.registry.name("lm-responses"), LMBatchAnswer)
        self._answered = {key: value.answer for key, value in answers.items() if value.answer.status == 200}
        if self._inflight:
            logger.info("resuming %d provider batches in flight", len(self._inflight))
        loops = [
            asyncio.create_task(self._collect_loop(), name="dspex-batch-collect"),
            asyncio.create_task(self._poll_loop(), name="dspex-batch-poll"),
        ]
        for loop in loops:
            stack.callback(loop.cancel)

    def runtime_options(self) -> dict[str, Any]:
        # every request waits here until its batch is checkpointed: up to --concurrency of them
        concurrency = self.options.concurrency
        return {"high_watermark": concurrency, "low_watermark": concurrency // 2}

    # ---- requests in -------------------------------------------------------------------------
    async def handle(self, message: Message, value: Any) -> Outcome:
        parked: ParkedLMRequest = value
        try:
            self.options.policy.check_lm(parked.api_base, parked.api_key_env)
        except SecurityPolicyError as exc:
            raise PoisonMessageError(str(exc), reason=DLQ_REASON_SECURITY_POLICY) from exc
        if _ident(parked) in self._known:  # redelivered after its batch was checkpointed
            return "skipped"
        if self.jobs is not None and self.jobs.stop_reason(parked.job_id) is not None:
            return "skipped"  # its job was cancelled or failed: nothing to pay the provider for
        known = self._answered.get(parked.request_hash)
        if known is not None:  # asked and answered before: not asked (nor billed) again
            await self._resume(parked, known.model_copy(update={"cached": True}))
            return "ok"
        group = (parked.api_base, parked.api_key_env, str(parked.body.get("model")))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._pending.setdefault(group, [])
        waiting.append((parked, done))
        self._first_at.setdefault(group, time.monotonic())
        if len(waiting) >= self.batching.limits.max_requests:
            self._wake.set()
        await done  # resolved once the request's batch is checkpointed: then its offset may commit
        return "ok"

    async def _collect_loop(self) -> None:
        tick = max(0.05, min(self.batching.window_s, 1.0) / 2)
        while True:
            try:
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            now = time.monotonic()
            for group in list(self._pending):
                full = len(self._pending[group]) >= self.batching.limits.max_requests
                if full or now - self._first_at.get(group, now) >= self.batching.window_s:
                    try:
                        await self._checkpoint_group(group)
                    except Exception:  # its requests stay uncommitted: they come again
                        logger.exception("provider batch requests of %s not recorded", group[0])

    async def _checkpoint_group(self, group: _Group) -> None:
        waiting = self._pending.pop(group, [])
        self._first_at.pop(group, None)
        if not waiting:
            return
        try:
            async with self._state:
                await self._record(group, await self._refuse_oversized([item for item, _ in waiting]))
        except asyncio.CancelledError:
            for _, done in waiting:  # not recorded: the requests stay uncommitted and come again
                done.cancel()
            raise
        except Exception:  # Kafka away: what is not recorded waits for the next round
            logger.exception("provider batch checkpoint failed; trying again")
            left = [(item, done) for item, done in waiting if _ident(item) not in self._known]
            self._pending.setdefault(group, []).extend(left)
            self._first_at.setdefault(group, time.monotonic())
            waiting = [(item, done) for item, done in waiting if _ident(item) in self._known]
        for _, done in waiting:
            if not done.done():
                done.set_result(None)
        self._wake_poll.set()

    async def _record(self, group: _Group, parked: list[ParkedLMRequest]) -> None:
        """Checkpoint ``parked``: a request a batch in flight already asks joins that batch (asked
        once, answered to every task waiting for it), the others go into new batches."""
        fresh: list[ParkedLMRequest] = []
        joining: dict[str, list[ParkedLMRequest]] = {}
        for item in parked:
            key = self._hash_at.get(item.request_hash)
            if key is not None and key in self._inflight:
                joining.setdefault(key, []).append(item)
            else:
                fresh.append(item)
        for key, items in joining.items():
            current = self._inflight[key]
            joined = current.model_copy(update={"requests": [*current.requests, *items]})
            await self._save(joined)
            self._track(joined)
        for checkpoint in self._new_checkpoints(group, fresh):
            await self._save(checkpoint)
            self._track(checkpoint)

    async def _refuse_oversized(self, parked: list[ParkedLMRequest]) -> list[ParkedLMRequest]:
        """``parked`` but the requests no batch file can hold, whose tasks get that error at once."""
        kept = []
        limit = self.batching.limits.max_bytes
        for item in parked:
            size = len(BatchRequest(item.request_hash, item.body).line())
            if size <= limit:
                kept.append(item)
                continue
            error = f"the request is {size} bytes; a provider batch file takes at most {limit}"
            await self._resume(item, StoredAnswer(status=400, error=error))
        return kept

    def _new_checkpoints(self, group: _Group, parked: list[ParkedLMRequest]) -> list[ProviderBatchCheckpoint]:
        api_base, key_env, _ = group
        client = self._client(api_base, key_env)
        unique = _unique_requests(parked)
        checkpoints = []
        for part in client.split(unique):
            hashes = {request.custom_id for request in part}
            members = [p for p in parked if p.request_hash in hashes]
            checkpoints.append(
                ProviderBatchCheckpoint(
                    key=_checkpoint_key(part, members),
                    api_base=api_base,
                    api_key_env=key_env,
                    model=members[0].model,
                    state="pending",
                    requests=members,
                    created_at=utc_now(),
                )
            )
        return checkpoints

    # ---- batches -----------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            for checkpoint in list(self._inflight.values()):
                try:
                    await self._advance(checkpoint)
                except LMError as exc:  # the provider is unreachable or refuses: try again next round
                    logger.warning("provider batch %s: %s", checkpoint.key[:16], exc)
                except Exception:  # e.g. Kafka away: the checkpoint is still there, next round retries
                    logger.exception("provider batch %s: not advanced this round", checkpoint.key[:16])
            try:
                async with asyncio.timeout(self.batching.poll_s):
                    await self._wake_poll.wait()
            except TimeoutError:
                pass
            self._wake_poll.clear()

    async def _advance(self, checkpoint: ProviderBatchCheckpoint) -> None:
        client = self._client(checkpoint.api_base, checkpoint.api_key_env)
        if checkpoint.state == "pending":
            async with self._state:
                checkpoint = await self._submit(client, self._inflight.get(checkpoint.key, checkpoint))
        if checkpoint.batch_id is None:
            return
        batch = await client.retrieve(checkpoint.batch_id)
        if batch.get("status") in ("completed", "failed", "expired", "cancelled"):
            results = await client.results(batch)
            async with self._state:  # with the requests that joined it meanwhile
                await self._finish(self._inflight.get(checkpoint.key, checkpoint), batch, results)

    async def _submit(
        self, client: ProviderBatchClient, checkpoint: ProviderBatchCheckpoint
    ) -> ProviderBatchCheckpoint:
        batch = await client.submit(_unique_requests(checkpoint.requests), key=checkpoint.key)
        checkpoint = checkpoint.model_copy(update={"state": "submitted", "batch_id": str(batch["id"])})
        await self._save(checkpoint)
        self._inflight[checkpoint.key] = checkpoint
        self.submitted += 1
        logger.info(
            "submitted provider batch %s (%d requests) as %s",
            checkpoint.key[:16], len(checkpoint.requests), checkpoint.batch_id,
        )  # fmt: skip
        return checkpoint

    async def _finish(
        self, checkpoint: ProviderBatchCheckpoint, batch: dict[str, Any], results: dict[str, BatchResult]
    ) -> None:
        again: list[ParkedLMRequest] = []
        batch_id = str(batch.get("id"))
        sends: list[Awaitable[None]] = []
        billed: set[str] = set()  # the provider bills a request once, whoever else waits for it
        for parked in checkpoint.requests:
            result = results.get(parked.request_hash) or _missing(parked, batch)
            if result.ok:
                answer = StoredAnswer(status=200, body=result.body, cached=parked.request_hash in billed)
                billed.add(parked.request_hash)
                if parked.request_hash not in self._answered:
                    record = LMBatchAnswer(request_hash=parked.request_hash, batch_id=batch_id, answer=answer)
                    sends.append(
                        _send(self, "lm-responses", record, parked.request_hash, job_id=parked.job_id)
                    )
                    self._answered[parked.request_hash] = answer
                sends.append(self._resume(parked, answer))
            elif result.retryable and self.batching.retry == "online":
                sends.append(self._answer_online(checkpoint, parked, batch_id))
            elif result.retryable and parked.tries + 1 < self.batching.max_tries:
                again.append(parked.model_copy(update={"tries": parked.tries + 1}))
            else:
                sends.append(self._resume(parked, StoredAnswer(status=result.status, error=result.error)))
        # sent together: one acknowledgement wait for all of them, not one per task
        await asyncio.gather(*sends)
        retries = []
        if again:
            group = (checkpoint.api_base, checkpoint.api_key_env, str(again[0].body.get("model")))
            retries = self._new_checkpoints(group, again)
        for retry in retries:  # recorded before this batch is done: a crash in between loses nothing
            await self._save(retry)
        await self._save(checkpoint.model_copy(update={"state": "done", "requests": []}))
        self._untrack(checkpoint)
        for retry in retries:
            self._track(retry)
        logger.info(
            "provider batch %s %s: %d answered, %d sent again",
            batch_id, batch.get("status"), len(checkpoint.requests) - len(again), len(again),
        )  # fmt: skip

    async def _answer_online(
        self, checkpoint: ProviderBatchCheckpoint, parked: ParkedLMRequest, batch_id: str
    ) -> None:
        """Ask the online endpoint what the batch did not answer; its error fails the example only."""
        client = self._client(checkpoint.api_base, checkpoint.api_key_env)
        try:
            body = await client.complete_online(parked.body)
        except LMError as exc:
            await self._resume(parked, StoredAnswer(status=exc.status, error=str(exc)))
            return
        answer = StoredAnswer(status=200, body=body, online=True)
        record = LMBatchAnswer(request_hash=parked.request_hash, batch_id=batch_id, answer=answer)
        await _send(self, "lm-responses", record, parked.request_hash, job_id=parked.job_id)
        self._answered.setdefault(parked.request_hash, answer)
        await self._resume(parked, answer)

    async def _resume(self, parked: ParkedLMRequest, answer: StoredAnswer) -> None:
        """Send the parked task back to the predictors with ``answer`` added."""
        task = parked.task
        answers = {**(task.batch_answers or {}), parked.request_hash: answer.model_dump(mode="json")}
        resumed = task.model_copy(update={"batch_answers": answers})
        if self.producer is None:
            raise ConfigurationError("the provider-batch worker is not running")
        await self.producer.produce_record(self.registry.name("tasks"), to_record(resumed, role="tasks"))
        self.resumed += 1

    # ---- state -------------------------------------------------------------------------------
    async def _save(self, checkpoint: ProviderBatchCheckpoint) -> None:
        await _send(self, "lm-batches", checkpoint, checkpoint.key)

    def _track(self, checkpoint: ProviderBatchCheckpoint) -> None:
        self._inflight[checkpoint.key] = checkpoint
        self._known.update(_ident(parked) for parked in checkpoint.requests)
        for parked in checkpoint.requests:
            self._hash_at.setdefault(parked.request_hash, checkpoint.key)

    def _untrack(self, checkpoint: ProviderBatchCheckpoint) -> None:
        self._inflight.pop(checkpoint.key, None)
        self._known.difference_update(_ident(parked) for parked in checkpoint.requests)
        for parked in checkpoint.requests:
            if self._hash_at.get(parked.request_hash) == checkpoint.key:
                del self._hash_at[parked.request_hash]

    def _client(self, api_base: str, api_key_env: str | None) -> ProviderBatchClient:
        client = self._clients.get((api_base, api_key_env))
        if client is None:
            client = ProviderBatchClient(api_base, api_key_env=api_key_env, limits=self.batching.limits)
            self._clients[(api_base, api_key_env)] = client
        return client


def _ident(parked: ParkedLMRequest) -> _Ident:
    return parked.request_hash, parked.task_id, parked.round


def _unique_requests(parked: Iterable[ParkedLMRequest]) -> list[BatchRequest]:
    """One batch request per request hash (tasks asking the same thing share its answer)."""
    unique: dict[str, BatchRequest] = {}
    for item in parked:
        unique.setdefault(item.request_hash, BatchRequest(item.request_hash, item.body))
    return list(unique.values())


def _checkpoint_key(part: list[BatchRequest], members: list[ParkedLMRequest]) -> str:
    # Which tasks wait and how often they were tried is part of the name: a retry batch of the same
    # requests is a new batch, while the same checkpoint read back after a restart keeps its name.
    waiting = sorted((p.request_hash, p.task_id, p.round, p.tries) for p in members)
    return content_id({"requests": batch_key(part), "waiting": waiting})


def _missing(parked: ParkedLMRequest, batch: dict[str, Any]) -> BatchResult:
    errors = (batch.get("errors") or {}).get("data") or []
    detail = "; ".join(str(error.get("message")) for error in errors if isinstance(error, dict))
    message = f"batch {batch.get('id')} ended {batch.get('status')} without an answer" + (
        f": {detail}" if detail else ""
    )
    return BatchResult(parked.request_hash, None, None, message)


async def _read_all(settings: KafkaSettings, topic: str, model: type[BaseModel]) -> dict[str, Any]:
    """Every key's latest value of a compacted topic, read to its end once."""
    reader: CompactedReader[Any] = CompactedReader(settings, topic, decoder=model)
    async with reader:
        await reader.wait_caught_up(_READ_TIMEOUT_S)
        return reader.snapshot()

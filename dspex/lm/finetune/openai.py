"""Fine-tuning through the OpenAI files and fine-tuning API, at any endpoint that speaks it.

    lm = dspex.LM("openai/gpt-4o-mini-2024-07-18")                     # OpenAI itself
    lm = dspex.LM("local/my-base", api_base="http://trainer:8000/v1",   # any compatible trainer
                  provider=OpenAIProvider(poll_interval=5))
    tuned = lm.finetune(records, "chat", {"n_epochs": 2}).result()      # LM("local/ft:my-base:dspex:...")

A job: the records are checked, uploaded as a JSONL file (``purpose=fine-tune``), a job is created
with ``hyperparameters`` from ``train_kwargs`` and a ``metadata`` key naming the data, and it is
polled (``poll_interval`` seconds, new events logged) until it ends. Success gives
``fine_tuned_model``; failure or cancellation raises :class:`~dspex.errors.FinetuneError` with the
job id and the provider's reason. With ``reattach=True`` (the default), a live or succeeded job with
the same key (same base model, records, hyperparameters and suffix) is used instead of starting
another: a restarted optimization finds the job its previous run started.

Data leaves the machine only for the LM's own API base; ``api_base=`` sends it elsewhere only when
that base is also in ``allowed_api_bases``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dspex._sync import run_sync
from dspex.errors import (
    ConfigurationError,
    FinetuneError,
    LMAuthenticationError,
    LMNotFoundError,
    LMRequestError,
    SecurityPolicyError,
)
from dspex.ids import content_id
from dspex.lm.finetune._api import FinetuneAPI
from dspex.lm.finetune.budget import TRAINING_PRICES, check_training_budget, estimate_training
from dspex.lm.finetune.data import TrainDataFormat, TrainingStatus, check_train_data, jsonl_bytes
from dspex.lm.finetune.provider import Endpoint, Provider, TrainingJob
from dspex.lm.usage import Usage, record_usage

__all__ = [
    "HYPERPARAMETERS",
    "METADATA_KEY",
    "OpenAIProvider",
    "TrainingJobOpenAI",
    "provider_status",
    "split_train_kwargs",
]

logger = logging.getLogger(__name__)

HYPERPARAMETERS = frozenset({"n_epochs", "batch_size", "learning_rate_multiplier"})
# train_kwargs that are fields of the job itself rather than hyperparameters
_JOB_FIELDS = frozenset({"suffix", "seed"})
METADATA_KEY = "dspex_finetune_key"
_STATUSES = {
    "validating_files": TrainingStatus.pending,
    "queued": TrainingStatus.pending,
    "running": TrainingStatus.running,
    "succeeded": TrainingStatus.succeeded,
    "failed": TrainingStatus.failed,
    "cancelled": TrainingStatus.cancelled,
}
_REATTACH_PAGES = 10


def provider_status(job: Mapping[str, Any]) -> TrainingStatus:
    """The :class:`TrainingStatus` of a provider's job object (an unknown status counts as pending)."""
    return _STATUSES.get(str(job.get("status")), TrainingStatus.pending)


def split_train_kwargs(train_kwargs: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, job fields) of ``train_kwargs``; any other key is a ConfigurationError."""
    if train_kwargs is None:
        return {}, {}
    if not isinstance(train_kwargs, Mapping):
        raise ConfigurationError(f"train_kwargs must be a mapping, got {type(train_kwargs).__name__}")
    unknown = sorted(set(train_kwargs) - HYPERPARAMETERS - _JOB_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"unknown train_kwargs {unknown} for an OpenAI-compatible fine-tuning job; accepted: "
            f"{sorted(HYPERPARAMETERS | _JOB_FIELDS)}"
        )
    hyper = {key: value for key, value in train_kwargs.items() if key in HYPERPARAMETERS}
    return hyper, {key: value for key, value in train_kwargs.items() if key in _JOB_FIELDS}


class TrainingJobOpenAI(TrainingJob):
    """A job at an OpenAI-compatible endpoint: ``status()`` and ``cancel()`` ask the endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cancel_requested = False
        self._cancel_sent = False
        self._cancel_lock = threading.Lock()

    def claim_cancel(self) -> bool:
        """True once, for whoever is to send the endpoint the cancel (this thread or the waiting one)."""
        with self._cancel_lock:
            claimed = self.cancel_requested and not self._cancel_sent and self.provider_job_id is not None
            self._cancel_sent = self._cancel_sent or claimed
            return claimed

    def status(self) -> TrainingStatus:
        if self.provider_job_id is None or self.endpoint is None:
            return super().status()
        return provider_status(run_sync(FinetuneAPI(self.endpoint).job(self.provider_job_id)))

    def cancel(self) -> bool:
        """Cancel the job at the endpoint (the waiting thread then ends with a FinetuneError); True
        when a cancel was sent or the job had not started yet."""
        self.cancel_requested = True
        if super().cancel():
            return True
        if self.done():
            return False
        if self.endpoint is not None and self.claim_cancel():
            run_sync(FinetuneAPI(self.endpoint).cancel(str(self.provider_job_id)))
        return True  # else the waiting thread sends it as soon as the job exists


class OpenAIProvider(Provider):
    """Fine-tuning through the OpenAI-compatible files and ``fine_tuning/jobs`` API (see module docs).

    ``poll_interval``: seconds between status polls. ``suffix``: the tuned model's name part
    (``ft:<base>:<suffix>:<job>``), unless ``train_kwargs`` names one. ``max_wait_s``: give up
    waiting (the job keeps running and a rerun re-attaches to it). ``api_base`` /
    ``allowed_api_bases``: see the module docs; the LM's key goes only to the LM's own base, any
    other gets the key in ``api_key_env`` (or none). ``max_training_tokens`` / ``max_cost_usd``: the
    training budget of one job, checked before the upload (see :mod:`dspex.lm.finetune.budget`).
    """

    def __init__(
        self,
        *,
        poll_interval: float = 20.0,
        suffix: str | None = "dspex",
        reattach: bool = True,
        max_wait_s: float | None = None,
        api_base: str | None = None,
        allowed_api_bases: Iterable[str] = (),
        api_key_env: str | None = None,
        max_training_tokens: int | None = None,
        max_cost_usd: float | None = None,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {poll_interval}")
        self.finetunable = True
        self.TrainingJob = TrainingJobOpenAI
        self.poll_interval = poll_interval
        self.suffix = suffix
        self.reattach = reattach
        self.max_wait_s = max_wait_s
        self.api_base = api_base.rstrip("/") if api_base else None
        self.allowed_api_bases = frozenset(base.rstrip("/") for base in allowed_api_bases)
        self.api_key_env = api_key_env
        self.max_training_tokens = max_training_tokens
        self.max_cost_usd = max_cost_usd

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return model.startswith(("openai/", "ft:"))

    def upload_base(self, lm_api_base: str, model: str) -> str:
        """Where the training data goes for an LM at ``lm_api_base``; a SecurityPolicyError when that
        is not the LM's own base and was not allowed."""
        target = self.api_base or lm_api_base
        if target != lm_api_base and target not in self.allowed_api_bases:
            raise SecurityPolicyError(
                f"fine-tuning data for {model} would go to {target}, which is not the LM's own API base "
                f"({lm_api_base}); pass allowed_api_bases=[{target!r}] to the provider to allow it"
            )
        return target

    def check(
        self, train_data: Sequence[Any], train_data_format: TrainDataFormat | str | None,
        train_kwargs: Mapping[str, Any] | None, *, model: str = "",
    ) -> TrainDataFormat:  # fmt: skip
        """The checks made before a job starts (records, format, train_kwargs, the training budget of
        ``model``): ConfigurationErrors."""
        data_format = check_train_data(train_data, train_data_format)
        if data_format not in (TrainDataFormat.CHAT, TrainDataFormat.COMPLETION):
            raise ConfigurationError(
                f"OpenAI-compatible fine-tuning takes chat or completion data, not {data_format}"
            )
        hyper, _ = split_train_kwargs(train_kwargs)
        if self.max_training_tokens is not None or self.max_cost_usd is not None:
            estimate = estimate_training(model, len(jsonl_bytes(train_data)), hyper)
            check_training_budget(
                estimate, model, max_tokens=self.max_training_tokens, max_cost_usd=self.max_cost_usd
            )
        return data_format

    def finetune(
        self,
        job: TrainingJob,
        model: str,
        train_data: Sequence[Any],
        train_data_format: TrainDataFormat | str | None,
        train_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Run the job to its end in this thread; the tuned model's id (see the module docs)."""
        self.check(train_data, train_data_format, train_kwargs, model=model)
        if job.endpoint is None:
            raise ConfigurationError("the job has no endpoint: start fine-tuning with LM.finetune")
        return asyncio.run(self.arun(job, job.endpoint, model, train_data, train_kwargs))

    async def arun(
        self, job: TrainingJob, endpoint: Endpoint, model: str, train_data: Sequence[Any],
        train_kwargs: Mapping[str, Any] | None,
    ) -> str:  # fmt: skip
        """Upload, create (or re-attach), wait: the tuned model's id."""
        api = FinetuneAPI(endpoint)
        hyper, fields = split_train_kwargs(train_kwargs)
        content = jsonl_bytes(train_data)
        suffix = fields.pop("suffix", self.suffix)
        key = content_id(
            {"model": model, "data": hashlib.sha256(content).hexdigest(), "hyper": hyper, "suffix": suffix}
        )
        try:
            found = await self._find_or_start(
                api, job, model, content, hyper, {**fields, "suffix": suffix}, key
            )
        except LMNotFoundError as exc:
            raise ConfigurationError(
                f"{endpoint.api_base} does not serve the OpenAI files and fine-tuning API ({exc}): it "
                f"cannot fine-tune {model}"
            ) from exc
        job.provider_job_id = str(found["id"])
        job.provider_file_id = found.get("training_file") or job.provider_file_id
        # a job that had ended before this run found it was paid for (and counted) by an earlier run
        charge = not provider_status(found).terminal
        return await self._wait(api, job, endpoint, charge=charge)

    async def _find_or_start(
        self, api: FinetuneAPI, job: TrainingJob, model: str, content: bytes,
        hyper: dict[str, Any], fields: dict[str, Any], key: str,
    ) -> dict[str, Any]:  # fmt: skip
        found = await self._find_job(api, key) if self.reattach else None
        if found is not None:
            logger.info(
                "fine-tuning of %s: re-attached to job %s (%s)", model, found["id"], found.get("status")
            )
            return found
        return await self._start(api, job, model, content, hyper, fields, key)

    async def _start(
        self, api: FinetuneAPI, job: TrainingJob, model: str, content: bytes,
        hyper: dict[str, Any], fields: dict[str, Any], key: str,
    ) -> dict[str, Any]:  # fmt: skip
        try:
            uploaded = await api.upload(content, filename=f"dspex-{key[:16]}.jsonl")
        except LMRequestError as exc:
            if isinstance(exc, LMNotFoundError | LMAuthenticationError):
                raise
            lines = content.count(b"\n")
            raise FinetuneError(
                f"{api.endpoint.api_base} refused the training file for {model} ({len(content):,} bytes, "
                f"{lines:,} records): {exc}",
                reason=str(exc), status=exc.status, api_base=api.endpoint.api_base,
            ) from exc  # fmt: skip
        job.provider_file_id = str(uploaded["id"])
        body: dict[str, Any] = {
            "model": model,
            "training_file": job.provider_file_id,
            "metadata": {METADATA_KEY: key},
            **{name: value for name, value in fields.items() if value is not None},
        }
        if hyper:
            body["hyperparameters"] = hyper
        created = await api.create_job(body)
        logger.info(
            "fine-tuning of %s: job %s started (file %s)", model, created.get("id"), job.provider_file_id
        )
        return created

    async def _find_job(self, api: FinetuneAPI, key: str) -> dict[str, Any] | None:
        """The newest live or succeeded job whose metadata carries ``key``, if any."""
        after: str | None = None
        for _ in range(_REATTACH_PAGES):
            page = await api.jobs(limit=100, after=after)
            jobs = [item for item in page.get("data") or [] if isinstance(item, dict)]
            for item in jobs:
                metadata = item.get("metadata") or {}
                usable = provider_status(item) not in (TrainingStatus.failed, TrainingStatus.cancelled)
                if metadata.get(METADATA_KEY) == key and usable:
                    return item
            if not page.get("has_more") or not jobs:
                return None
            after = str(jobs[-1]["id"])
        return None

    async def _wait(self, api: FinetuneAPI, job: TrainingJob, endpoint: Endpoint, *, charge: bool) -> str:
        job_id = str(job.provider_job_id)
        started = time.monotonic()
        seen: set[str] = set()
        while True:
            state = await api.job(job_id)
            await self._log_events(api, job_id, seen)
            status = provider_status(state)
            if status.terminal:
                _record_size(job, state, charge=charge)
                return _outcome(state, job_id, endpoint)
            if isinstance(job, TrainingJobOpenAI) and job.claim_cancel():
                await api.cancel(job_id)
            if self.max_wait_s is not None and time.monotonic() - started > self.max_wait_s:
                raise FinetuneError(
                    f"fine-tuning job {job_id} at {endpoint.api_base} is still {state.get('status')} after "
                    f"{self.max_wait_s}s; it keeps running and a rerun with the same data re-attaches to it",
                    job_id=job_id, reason="timeout", api_base=endpoint.api_base,
                )  # fmt: skip
            await asyncio.sleep(self.poll_interval)

    async def _log_events(self, api: FinetuneAPI, job_id: str, seen: set[str]) -> None:
        page = await api.events(job_id)
        events = [event for event in page.get("data") or [] if isinstance(event, dict)]
        for event in reversed(events):  # the API lists newest first
            event_id = str(event.get("id"))
            if event_id not in seen:
                seen.add(event_id)
                logger.info("fine-tuning job %s: %s", job_id, event.get("message"))


def _record_size(job: TrainingJob, state: Mapping[str, Any], *, charge: bool) -> None:
    """The tokens the provider says it trained, and their price, on the job (``charge``: and in the
    open usage trackers)."""
    trained = state.get("trained_tokens")
    if isinstance(trained, int):
        job.trained_tokens = trained
        job.cost_usd = TRAINING_PRICES.cost_of(str(job.model), trained, 0)
        if charge:
            record_usage(Usage(cost_usd=job.cost_usd))  # no LM call: a cost for the open usage trackers


def _outcome(state: Mapping[str, Any], job_id: str, endpoint: Endpoint) -> str:
    """The tuned model of an ended job; a FinetuneError with the provider's reason otherwise."""
    status = provider_status(state)
    if status is TrainingStatus.succeeded:
        model = state.get("fine_tuned_model")
        if not isinstance(model, str) or not model:
            raise FinetuneError(
                f"fine-tuning job {job_id} at {endpoint.api_base} succeeded without a fine_tuned_model",
                job_id=job_id, reason="no model", api_base=endpoint.api_base,
            )  # fmt: skip
        return model
    raw_error = state.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, Mapping) else {}
    reason = str(error.get("message") or state.get("status"))
    code = f" [{error['code']}]" if error.get("code") else ""
    raise FinetuneError(
        f"fine-tuning job {job_id} of {state.get('model')} at {endpoint.api_base} ended "
        f"{state.get('status')}: {reason}{code}",
        job_id=job_id, reason=reason, api_base=endpoint.api_base,
    )  # fmt: skip

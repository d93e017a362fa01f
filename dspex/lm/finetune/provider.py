"""DSPy's ``Provider``, ``TrainingJob`` and ``ReinforceJob``: who fine-tunes an LM, the future of
one fine-tuning job, and one reinforcement-learning (GRPO) job.

    job = lm.finetune(train_data, "chat", {"n_epochs": 2})   # a TrainingJob; the work runs in a thread
    job.status()                                            # a TrainingStatus
    tuned = job.result()                                    # the new LM, or the job's FinetuneError raised

As DSPy's: ``Provider.finetune(job, model, train_data, train_data_format, train_kwargs)`` does the
work and returns the tuned model's id, and the LM wraps it as a new LM. What differs: a failure is
the future's exception (``result()`` raises it), never an exception object handed back as the result
(DSPy logs and returns it, and callers have saved it as "the model"). The provider reaches the
endpoint through the :class:`Endpoint` the LM gives the job, so the key stays with the LM.

Reinforcement learning, as in DSPy 3.4.1: a provider with ``reinforceable = True`` names its job
class in ``ReinforceJob``; ``lm.reinforce(train_kwargs)`` creates one and initializes it, and
:class:`dspex.GRPO` steps it. Like DSPy, dspex ships no reinforceable provider: GRPO trainers
(Arbor and the like) bring their own job class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import ConfigurationError
from dspex.lm.finetune.data import GRPOGroup, GRPOStatus, TrainDataFormat, TrainingStatus

__all__ = ["Endpoint", "Provider", "ReinforceJob", "TrainingJob"]


@dataclass(frozen=True)
class Endpoint:
    """Where a job's data goes and how to authenticate: ``headers()`` is read at call time and is the
    only holder of the key (never in a repr, a log line or an error)."""

    api_base: str
    model: str  # the name requests send (no 'provider/' prefix)
    headers: Callable[[], dict[str, str]] = field(repr=False)
    secret: Callable[[], str | None] = field(repr=False, default=lambda: None)


class TrainingJob(Future[Any]):
    """One fine-tuning job as a future: ``result()`` is the tuned LM (a failure raises), ``status()``
    where the provider says it is, ``cancel()`` stops it at the provider."""

    def __init__(
        self,
        thread: threading.Thread | None = None,
        model: str | None = None,
        train_data: Sequence[Any] | None = None,
        train_data_format: TrainDataFormat | str | None = None,
        train_kwargs: Mapping[str, Any] | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        super().__init__()
        self.thread = thread
        self.model = model
        self.train_data = list(train_data or [])
        self.train_data_format = train_data_format
        self.train_kwargs: dict[str, Any] = dict(train_kwargs or {})
        self.endpoint = endpoint
        # set by the provider as the job progresses (checkpointed by optimizers that resume)
        self.provider_file_id: str | None = None
        self.provider_job_id: str | None = None
        self.trained_tokens: int | None = None  # as the provider reports them, once the job ended
        self.cost_usd: float | None = None

    def status(self) -> TrainingStatus:
        """The job's status; a provider's job class reports the provider's view."""
        if self.done():
            if self.cancelled():
                return TrainingStatus.cancelled
            return TrainingStatus.failed if self.exception() else TrainingStatus.succeeded
        return TrainingStatus.running if self.running() else TrainingStatus.not_started


class ReinforceJob:
    """One reinforcement-learning job at a provider, stepped by :class:`dspex.GRPO` (DSPy's
    interface): ``initialize()`` once, ``step(train_data, train_data_format)`` with the
    :class:`~dspex.lm.finetune.data.GRPOGroup` s of each training step, ``terminate()`` at the end.
    Between steps GRPO reads ``get_status()["pending_batch_ids"]``: the batches the trainer waits
    for. A provider's job may update ``lm`` in place as training goes (DSPy's GRPO does not create
    new LMs). This base does nothing: each method names the subclass that lacks it."""

    def __init__(self, lm: Any, train_kwargs: Mapping[str, Any] | None = None) -> None:
        self.lm = lm
        self.train_kwargs: dict[str, Any] = dict(train_kwargs or {})
        self.checkpoints: dict[str, Any] = {}
        self.last_checkpoint: str | None = None

    def initialize(self) -> None:
        raise self._missing("initialize")

    def step(
        self, train_data: Sequence[GRPOGroup], train_data_format: TrainDataFormat | str | None = None
    ) -> None:
        raise self._missing("step")

    def terminate(self) -> None:
        raise self._missing("terminate")

    def save_checkpoint(self, checkpoint_name: str) -> None:
        raise self._missing("save_checkpoint")

    def cancel(self) -> None:
        raise self._missing("cancel")

    def status(self) -> Any:
        raise self._missing("status")

    def get_status(self) -> GRPOStatus:
        raise self._missing("get_status")

    def _missing(self, method: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__qualname__} does not implement ReinforceJob.{method}()")


class Provider:
    """Fine-tunes (and launches, for local models) the LMs it serves; this base can do neither.

    A subclass sets ``finetunable = True`` and implements :meth:`finetune`; ``TrainingJob`` is the
    job class :meth:`dspex.LM.finetune` creates. A provider that trains with reinforcement learning
    sets ``reinforceable = True`` and its :class:`ReinforceJob` subclass in ``ReinforceJob``.
    """

    def __init__(self) -> None:
        self.finetunable = False
        self.reinforceable = False
        self.TrainingJob: type[TrainingJob] = TrainingJob
        self.ReinforceJob: type[ReinforceJob] = ReinforceJob

    @staticmethod
    def is_provider_model(model: str) -> bool:
        """Whether this provider serves ``model`` (for discovery; the base serves none)."""
        return False

    def upload_base(self, lm_api_base: str, model: str) -> str:
        """Where training data for an LM at ``lm_api_base`` goes: that base itself, by default."""
        return lm_api_base

    def launch(self, lm: Any, launch_kwargs: Mapping[str, Any] | None = None) -> None:
        """Start a local model; API models have nothing to start."""

    def kill(self, lm: Any, launch_kwargs: Mapping[str, Any] | None = None) -> None:
        """Stop a local model; API models have nothing to stop."""

    def finetune(
        self,
        job: TrainingJob,
        model: str,
        train_data: Sequence[Any],
        train_data_format: TrainDataFormat | str | None,
        train_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Fine-tune ``model`` on ``train_data`` (blocking, in the job's thread); the tuned model's id."""
        raise ConfigurationError(f"{type(self).__name__} cannot fine-tune {model!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

"""Fine-tuning: DSPy's ``Provider``, ``TrainingJob``, ``TrainingStatus`` and ``TrainDataFormat``, and
an OpenAI-compatible provider (:class:`OpenAIProvider`) for any endpoint that serves the OpenAI files
and fine-tuning API.

    job = dspex.LM("openai/gpt-4o-mini-2024-07-18").finetune(records, "chat", {"n_epochs": 2})
    tuned_lm = job.result()          # a new LM for ft:gpt-4o-mini-2024-07-18:dspex:..., same endpoint

:func:`start_finetune` is what :meth:`dspex.LM.finetune` runs: the checks happen before it returns
(a malformed record, an unknown ``train_kwargs`` key, a provider that cannot fine-tune, an upload
target that is not allowed: all raised at once); the job itself runs in a thread of its own, in the
caller's context, so a ``dspex.track_usage()`` open around the call counts the job's training cost.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import ConfigurationError
from dspex.lm.finetune.budget import register_training_prices
from dspex.lm.finetune.data import (
    GRPOChatData,
    GRPOGroup,
    GRPOStatus,
    TrainDataFormat,
    TrainingStatus,
    check_train_data,
)
from dspex.lm.finetune.openai import OpenAIProvider, TrainingJobOpenAI
from dspex.lm.finetune.provider import Endpoint, Provider, ReinforceJob, TrainingJob

__all__ = [
    "Endpoint",
    "GRPOChatData",
    "GRPOGroup",
    "GRPOStatus",
    "OpenAIProvider",
    "Provider",
    "ReinforceJob",
    "TrainDataFormat",
    "TrainingJob",
    "TrainingJobOpenAI",
    "TrainingStatus",
    "register_training_prices",
    "start_finetune",
]


def start_finetune(
    provider: Provider,
    endpoint: Endpoint,
    model: str,
    train_data: Sequence[Any],
    train_data_format: TrainDataFormat | str | None,
    train_kwargs: Mapping[str, Any] | None,
    make_lm: Callable[[str], Any],
) -> TrainingJob:
    """Check, then run ``provider.finetune`` in a new thread; the job's result is ``make_lm(model_id)``.

    ``model`` is the name the endpoint knows; ``make_lm`` turns the tuned model's id into an LM.
    """
    if not provider.finetunable:
        raise ConfigurationError(
            f"{provider!r} cannot fine-tune {model!r}; give the LM a provider that can, e.g. "
            "dspex.LM(..., provider=OpenAIProvider()) for an endpoint with the OpenAI fine-tuning API"
        )
    check = getattr(provider, "check", None)
    data_format = check(train_data, train_data_format, train_kwargs, model=model) if callable(check) else (
        check_train_data(train_data, train_data_format)
    )  # fmt: skip
    job = provider.TrainingJob(
        model=model, train_data=train_data, train_data_format=data_format,
        train_kwargs=train_kwargs, endpoint=endpoint,
    )  # fmt: skip
    # The caller's context goes along: its usage trackers hear the job's training cost.
    context = contextvars.copy_context()
    job.thread = threading.Thread(
        target=context.run, args=(_run, job, provider, make_lm), name=f"dspex-finetune-{model}", daemon=True
    )
    job.thread.start()
    return job


def _run(job: TrainingJob, provider: Provider, make_lm: Callable[[str], Any]) -> None:
    if not job.set_running_or_notify_cancel():
        return
    try:
        model_id = provider.finetune(
            job=job, model=str(job.model), train_data=job.train_data,
            train_data_format=job.train_data_format, train_kwargs=job.train_kwargs,
        )  # fmt: skip
        job.set_result(make_lm(model_id))
    except BaseException as exc:  # the job's outcome: result() raises it in the waiting thread
        job.set_exception(exc)

"""The simulated LM's fine-tuning API, shaped like OpenAI's ``/v1/fine_tuning/jobs`` (a simulation:
nothing is trained; a tuned model answers the arithmetic task better by a documented rule).

- ``POST /v1/fine_tuning/jobs`` ``{"model", "training_file", "hyperparameters", "suffix",
  "metadata", "seed"}`` starts a job over an uploaded file (purpose ``fine-tune``, see
  :mod:`dspex.testing._files`);
- ``GET /v1/fine_tuning/jobs/{id}`` answers the job object, ``GET /v1/fine_tuning/jobs?limit=&after=``
  lists jobs newest first (``after``: the last id of the previous page), so a restarted client finds
  its job by ``metadata``;
- ``GET /v1/fine_tuning/jobs/{id}/events?limit=`` the job's events, newest first;
- ``POST /v1/fine_tuning/jobs/{id}/cancel`` cancels a job that has not ended.

A job goes ``validating_files`` -> ``queued`` -> ``running`` -> ``succeeded`` over the
``finetune_seconds`` knob (a tenth validating, a tenth queued, the rest running), computed from the
clock and the knob's current value whenever the job is read. Validation reads the file as
chat-format JSONL (OpenAI's rules: one ``{"messages": [...]}`` object a line, an assistant message in
each, at least :data:`MIN_EXAMPLES` lines); the first bad line fails the job with
``invalid_training_file`` and a message naming the line. With the ``finetune_fail`` knob a share of
jobs (drawn from the fault generator) fails while running. A succeeded job's ``fine_tuned_model`` is
``ft:<base>:<suffix>:<job id>``; chat completions accept it, and its answers are correct more often
by the gain :func:`dspex.testing.task.finetune_gain` computes from the file (correct examples raise
it, corrupted labels give none).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dspex.testing import _errors as err
from dspex.testing._files import found, gated, page_after
from dspex.testing._prompt import answer_field, message_text, sections
from dspex.testing.task import finetune_gain, parse_question

if TYPE_CHECKING:
    from dspex.testing._server import SimulatedLM

__all__ = ["MIN_EXAMPLES", "FinetuneStore", "answer_model", "finetune_routes", "tuned_gain"]

MIN_EXAMPLES = 10  # OpenAI refuses training files with fewer examples
_LIST_DEFAULT, _LIST_MAX = 20, 100
_ENDED = frozenset({"succeeded", "failed", "cancelled"})
_STAGES = (("validating_files", 0.1), ("queued", 0.1), ("running", 0.8))
_CHARS_PER_TOKEN = 4
_DEFAULT_EPOCHS = 3
_ROLES = frozenset({"system", "user", "assistant"})
# Fine-tuned model id -> its accuracy gain, for every simulated server in the process: the answer
# code (dspex.testing._completion) is a function of the request alone and looks gains up here. Ids
# carry a per-server random part, so servers never share one.
_GAINS: dict[str, float] = {}


def tuned_gain(model: Any) -> float:
    """The accuracy gain of a model a simulated fine-tuning job made (0 for any other)."""
    return _GAINS.get(model, 0.0) if isinstance(model, str) else 0.0


def answer_model(model: Any) -> Any:
    """The model as the answer draws see it: a tuned model without its job id (``ft:<base>:<suffix>``),
    so the same tuning answers alike in every run of the simulation; any other model as it is."""
    return model.rsplit(":", 1)[0] if isinstance(model, str) and model in _GAINS else model


@dataclass(slots=True)
class _Job:
    id: str
    model: str
    training_file: str
    hyperparameters: dict[str, Any]
    suffix: str | None
    metadata: dict[str, str] | None
    seed: int
    fails: bool
    created_at: float = field(default_factory=time.time)
    status: str = "validating_files"
    fine_tuned_model: str | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    trained_tokens: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_object(self, duration: float) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": int(self.created_at),
            "finished_at": None if self.finished_at is None else int(self.finished_at),
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": "org-simulated",
            "result_files": [],
            "status": self.status,
            "validation_file": None,
            "training_file": self.training_file,
            "hyperparameters": self.hyperparameters,
            "trained_tokens": self.trained_tokens,
            "error": self.error or {},
            "seed": self.seed,
            "estimated_finish": int(self.created_at + duration),
            "metadata": self.metadata,
            "suffix": self.suffix,
        }


def _line_error(record: Any) -> str | None:
    """Why a parsed line is not a chat training example (OpenAI's rules), or None."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        return "expected an object with a non-empty `messages` list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"message {index} needs a role of system, user or assistant"
        if not isinstance(message.get("content"), str):
            return f"message {index} needs string content"
    if not any(message["role"] == "assistant" for message in messages):
        return "no assistant message to learn from"
    return None


def _record_outcome(record: Mapping[str, Any]) -> bool | None:
    """Whether a chat record teaches a correct arithmetic answer (None: it asks no question)."""
    messages = record["messages"]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    answers = [m for m in messages[last_user + 1 :] if m["role"] == "assistant"]
    if last_user < 0 or not answers:
        return None
    asked = sections(message_text(messages[last_user]["content"]))
    question = next((q for v in asked.values() if (q := parse_question(v)) is not None), None)
    if question is None:
        question = parse_question(message_text(messages[last_user]["content"]))
    if question is None:
        return None
    said = sections(message_text(answers[0]["content"]))
    name = answer_field(list(said))
    try:
        return name is not None and int(said[name].strip()) == question.answer
    except ValueError:
        return False


def _read_training_file(data: bytes) -> tuple[list[Mapping[str, Any]], str | None]:
    """The file's records, or the reason it is not a chat-format training file (naming the line)."""
    records: list[Mapping[str, Any]] = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            return [], f"Invalid file format. Line {number} is not valid JSON."
        problem = _line_error(record)
        if problem is not None:
            return [], f"Invalid file format. Line {number}, {problem}."
        records.append(record)
    if len(records) < MIN_EXAMPLES:
        return [], f"Training file has {len(records)} example(s), but must have at least {MIN_EXAMPLES}."
    return records, None


class FinetuneStore:
    """The fine-tuning jobs of one simulated LM, in memory."""

    def __init__(self, sim: SimulatedLM) -> None:
        self._sim = sim
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        self._run = os.urandom(4).hex()
        self.created = 0

    def get(self, job_id: str) -> _Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            self._advance(job)
        return job

    def serves(self, model: Any) -> bool:
        """Whether ``model`` is a fine-tuned model one of this store's jobs made."""
        return isinstance(model, str) and any(j.fine_tuned_model == model for j in self._jobs.values())

    def create(self, body: Mapping[str, Any]) -> _Job | web.Response:
        """A new job, or the error answer for a request that cannot start one."""
        model, file_id = body.get("model"), body.get("training_file")
        if not isinstance(model, str) or not model:
            return err.bad_request("`model` is required")
        stored = self._sim.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None or stored.purpose != "fine-tune":
            return err.bad_request(f"invalid training_file: {file_id!r} (upload it with purpose 'fine-tune')")
        hyper = body.get("hyperparameters") or {}
        metadata, suffix = body.get("metadata"), body.get("suffix")
        if not isinstance(hyper, dict) or not (metadata is None or isinstance(metadata, dict)):
            return err.bad_request("`hyperparameters` and `metadata` must be objects")
        config = self._sim.config
        job = _Job(
            id=f"ftjob-sim{self._run}{next(self._ids):06d}", model=model, training_file=file_id,  # type: ignore[arg-type]
            hyperparameters={"n_epochs": hyper.get("n_epochs", "auto"), **hyper},
            suffix=suffix if isinstance(suffix, str) else None,
            metadata={str(k): str(v) for k, v in metadata.items()} if metadata else None,
            seed=int(body.get("seed") or 0),
            fails=config.finetune_fail > 0 and self._sim.draw() < config.finetune_fail,
        )  # fmt: skip
        self._event(job, f"Created fine-tuning job: {job.id}")
        self._jobs[job.id] = job
        self.created += 1
        return job

    def listing(self, limit: int, after: str | None) -> tuple[list[_Job], bool]:
        page, more = page_after(list(self._jobs.values()), list(self._jobs), limit, after)
        for job in page:
            self._advance(job)
        return page, more

    def cancel(self, job: _Job) -> web.Response | None:
        self._advance(job)
        if job.status in _ENDED:
            return err.bad_request(f"Job {job.id} has already ended ({job.status}) and cannot be cancelled")
        self._end(job, "cancelled", "Fine-tuning job cancelled")
        return None

    def stats(self) -> dict[str, Any]:
        statuses = [self.get(job_id) for job_id in list(self._jobs)]
        counts: dict[str, int] = {}
        for job in statuses:
            if job is not None:
                counts[job.status] = counts.get(job.status, 0) + 1
        return {"jobs": len(self._jobs), "created": self.created, "by_status": counts}

    # -- the job's clock -----------------------------------------------------------------------
    def _advance(self, job: _Job) -> None:
        """Move ``job`` through the stages its elapsed time has covered."""
        elapsed = time.time() - job.created_at
        duration = self._sim.config.finetune_seconds  # read live: a test may shorten a running job
        start = 0.0
        for stage, share in _STAGES:
            if job.status in _ENDED:
                return
            end = start + share * duration
            if job.status == stage and elapsed >= end:
                self._leave(job, stage)
            start = end

    def _leave(self, job: _Job, stage: str) -> None:
        if stage == "validating_files":
            self._validate(job)
        elif stage == "queued":
            job.status = "running"
            self._event(job, f"Fine-tuning job started (simulated, {job.hyperparameters['n_epochs']} epochs)")
        elif job.fails:
            self._end(job, "failed", "Simulated training failure (the finetune_fail knob)", "training_failed")
        else:
            job.fine_tuned_model = f"ft:{job.model}:{job.suffix or 'sim'}:{job.id}"
            self._end(job, "succeeded", f"New fine-tuned model created: {job.fine_tuned_model}")

    def _validate(self, job: _Job) -> None:
        stored = self._sim.files.get(job.training_file)
        if stored is None:
            self._end(job, "failed", f"File {job.training_file} was deleted", "invalid_training_file")
            return
        records, problem = _read_training_file(stored.data)
        if problem is not None:
            self._end(job, "failed", problem, "invalid_training_file")
            return
        outcomes = [_record_outcome(record) for record in records]
        correct, wrong = outcomes.count(True), outcomes.count(False)
        epochs = job.hyperparameters["n_epochs"]
        epochs = epochs if isinstance(epochs, int) and epochs > 0 else _DEFAULT_EPOCHS
        job.trained_tokens = epochs * -(-len(stored.data) // _CHARS_PER_TOKEN)
        _GAINS[f"ft:{job.model}:{job.suffix or 'sim'}:{job.id}"] = finetune_gain(correct, wrong)
        job.status = "queued"
        self._event(
            job, f"Validated training file: {len(records)} examples ({correct} correct, {wrong} wrong)"
        )

    def _end(self, job: _Job, status: str, message: str, code: str | None = None) -> None:
        job.status, job.finished_at = status, time.time()
        if code is not None:
            job.error = {"code": code, "message": message, "param": "training_file"}
        self._event(job, message, level="error" if code else "info")

    def _event(self, job: _Job, message: str, level: str = "info") -> None:
        number = len(job.events) + 1
        event_id = f"ftevent-{job.id}-{number}"
        job.events.append({
            "object": "fine_tuning.job.event", "id": event_id, "created_at": int(time.time()),
            "level": level, "message": message, "data": {}, "type": "message",
        })  # fmt: skip


def _limit(request: web.Request) -> int | web.Response:
    try:
        limit = int(request.query.get("limit", _LIST_DEFAULT))
    except ValueError:
        return err.bad_request("`limit` must be an integer")
    return max(1, min(limit, _LIST_MAX))


def finetune_routes(sim: SimulatedLM) -> list[web.RouteDef]:
    """The ``/v1/fine_tuning/jobs`` routes bound to ``sim`` (its ``finetuning`` store)."""
    store: FinetuneStore = sim.finetuning

    def _seconds() -> float:
        return sim.config.finetune_seconds

    def find(request: web.Request) -> _Job | web.Response:
        return found(request, "job_id", store.get, "fine-tuning job")

    async def create(request: web.Request) -> web.Response:
        body = await err.read_json(request)
        if isinstance(body, web.Response):
            return body
        job = store.create(body)
        return job if isinstance(job, web.Response) else web.json_response(job.as_object(_seconds()))

    async def retrieve(request: web.Request) -> web.Response:
        job = find(request)
        return job if isinstance(job, web.Response) else web.json_response(job.as_object(_seconds()))

    async def listing(request: web.Request) -> web.Response:
        limit = _limit(request)
        if isinstance(limit, web.Response):
            return limit
        jobs, more = store.listing(limit, request.query.get("after"))
        data = [job.as_object(_seconds()) for job in jobs]
        return web.json_response({"object": "list", "data": data, "has_more": more})

    async def events(request: web.Request) -> web.Response:
        job = find(request)
        limit = _limit(request)
        if isinstance(job, web.Response) or isinstance(limit, web.Response):
            return job if isinstance(job, web.Response) else limit  # type: ignore[return-value]
        page = job.events[::-1][:limit]
        return web.json_response({"object": "list", "data": page, "has_more": len(job.events) > limit})

    async def cancel(request: web.Request) -> web.Response:
        job = find(request)
        if isinstance(job, web.Response):
            return job
        refused = store.cancel(job)
        return refused if refused is not None else web.json_response(job.as_object(_seconds()))

    return gated(
        sim,
        "fine_tuning",
        [
            web.post("/v1/fine_tuning/jobs", create),
            web.get("/v1/fine_tuning/jobs", listing),
            web.get("/v1/fine_tuning/jobs/{job_id}", retrieve),
            web.get("/v1/fine_tuning/jobs/{job_id}/events", events),
            web.post("/v1/fine_tuning/jobs/{job_id}/cancel", cancel),
        ],
    )

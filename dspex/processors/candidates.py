"""Candidate programs by id: the compacted candidates topic, built into runnable modules once each.

A task names its program by candidate id. The cache follows the candidates topic from the beginning
(no consumer group) and builds each program the first time a task asks for it, under the worker's
security policy: custom module classes only from allowed modules, and every LM a predictor carries
checked against the allowed API bases and key variables *before* anything is called. Each predictor's
LM is swapped for the worker's pooled client with the same settings (warm connections, the worker's
cache choice). A build that fails is remembered, so a bad candidate costs one attempt, not one per task.

    >>> program = await candidates.program(task.candidate_id)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from dspex.errors import ConfigurationError, PoisonMessageError, ProgramLoadError, SecurityPolicyError
from dspex.primitives import Module
from dspex.primitives.saving import load_program
from dspex.processors.lms import LMPool
from dspex.processors.security import SecurityPolicy
from dspex.schemas.dlq import DLQ_REASON_SECURITY_POLICY, DLQ_REASON_UNKNOWN_CANDIDATE
from dspex.schemas.programs import ProgramSpec
from dspex.streams.config import KafkaSettings
from dspex.streams.reader import CompactedReader

__all__ = ["CandidateCache"]

logger = logging.getLogger(__name__)


class CandidateCache:
    """Built programs by candidate id (see the module docs)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        policy: SecurityPolicy,
        lms: LMPool,
        wait_s: float = 10.0,
    ) -> None:
        """``wait_s``: how long a task waits for a candidate that has not been read yet."""
        self.policy = policy
        self.lms = lms
        self.wait_s = wait_s
        self._reader: CompactedReader[Any] = CompactedReader(settings, topic, decoder=ProgramSpec)
        self._built: dict[str, Module] = {}
        self._failed: dict[str, ProgramLoadError | PoisonMessageError] = {}

    async def __aenter__(self) -> CandidateCache:
        await self._reader.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._reader.aclose()

    async def program(self, candidate_id: str) -> Module:
        """The runnable program of ``candidate_id``.

        Raises PoisonMessageError ("unknown_candidate" when it did not appear within ``wait_s``,
        "security_policy" when it names code or an LM the worker does not allow) and
        ProgramLoadError when it cannot be built (every task of the job fails alike).
        """
        if candidate_id in self._built:
            return self._built[candidate_id]
        if candidate_id in self._failed:
            raise _again(self._failed[candidate_id])
        spec = await self._spec(candidate_id)
        if candidate_id not in self._built and candidate_id not in self._failed:
            self._build(candidate_id, spec)  # no await since the check: built once, however many wait
        return await self.program(candidate_id)

    async def _spec(self, candidate_id: str) -> ProgramSpec:
        try:
            spec: ProgramSpec = await self._reader.wait_for(candidate_id, self.wait_s)
        except TimeoutError:
            raise PoisonMessageError(
                f"candidate {candidate_id} is not on {self._reader.topic} (waited {self.wait_s:g} s); "
                "publish the program before its tasks",
                reason=DLQ_REASON_UNKNOWN_CANDIDATE,
            ) from None
        return spec

    def _build(self, candidate_id: str, spec: ProgramSpec) -> None:
        if not spec.id_matches:
            logger.warning("candidate %s: the id is not the content id of its program", candidate_id)
        source = f"candidate {candidate_id}"
        try:
            program = load_program(spec.program, allow_modules=self.policy.modules, source=source)
            for predictor in program.predictors():
                if predictor.lm is not None:
                    predictor.lm = self.lms.for_settings(predictor.lm.settings())
        except SecurityPolicyError as exc:
            self._failed[candidate_id] = PoisonMessageError(
                f"{source} refused: {exc}", reason=DLQ_REASON_SECURITY_POLICY
            )
        except ProgramLoadError as exc:
            self._failed[candidate_id] = exc
        except ConfigurationError as exc:  # e.g. LM settings no client can be built from
            self._failed[candidate_id] = ProgramLoadError(f"{source}: {exc}")
        else:
            self._built[candidate_id] = program
            logger.info("built %s (%s predictors)", source, len(program.predictors()))


def _again(error: ProgramLoadError | PoisonMessageError) -> Exception:
    """A fresh copy of a remembered failure (raising one object again and again grows its traceback)."""
    if isinstance(error, PoisonMessageError):
        return PoisonMessageError(str(error), reason=error.reason)
    return ProgramLoadError(str(error))

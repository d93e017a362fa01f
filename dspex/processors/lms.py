"""The LM clients a worker uses: one per distinct LM settings, each checked against the policy.

Jobs carry LM settings (an LMSpec; a program's predictors carry their own LMSettings), never a key.
The pool turns them into clients once: HTTP connections stay warm across tasks, the key is read
from this worker's environment by the variable the settings name, and the API base and key variable
are checked against the worker's allow-lists *before* the client exists, so a refused LM is never
called. Refusals are remembered per settings. Every LM of one API base shares that endpoint's
adaptive limiter and circuit breaker (:class:`~dspex.processors.endpoints.Endpoints`), and request
options may not reach the client's own arguments (a key, a limiter, a cache directory).

    >>> pool = LMPool(SecurityPolicy(), cache_dir=None)
    >>> lm = pool.for_spec(LMSpec(model="openai/sim", api_base="http://127.0.0.1:8000/v1"))
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError, DspexError, SecurityPolicyError
from dspex.ids import content_id
from dspex.lm import LM, LMSettings
from dspex.lm.transport import aclose_client
from dspex.processors.endpoints import Endpoints
from dspex.processors.security import SecurityPolicy
from dspex.schemas.common import LMSpec

__all__ = ["LMPool"]

# LM constructor arguments a job's request options must not set: they are the worker's to choose.
_JOBS_REMEMBERED = 1024
_CLIENT_ARGUMENTS = frozenset(inspect.signature(LM.__init__).parameters) - {"self", "request_kwargs"}


class LMPool:
    """One LM client per distinct LM settings, checked against the policy before it is built.

    Reusing the client per settings keeps HTTP connections warm. The response cache is on only
    when the worker was given a cache directory (and the settings ask for it).
    """

    def __init__(
        self, policy: SecurityPolicy, *, cache_dir: Path | None = None, endpoints: Endpoints | None = None
    ) -> None:
        self.policy = policy
        self.cache_dir = cache_dir
        self.endpoints = endpoints
        self._lms: dict[str, LM] = {}
        self._refused: dict[str, DspexError] = {}
        self._by_job: dict[str, tuple[LMSpec, LM]] = {}

    def for_spec(self, spec: LMSpec, *, job_id: str | None = None) -> LM:
        """The LM of a job's LMSpec (SecurityPolicyError / ConfigurationError when it cannot be used).

        With ``job_id``, the LM found for the job's previous task is reused while the spec is equal
        (every task of a job carries the same one): no content id to compute per task.
        """
        if job_id is not None:
            known = self._by_job.get(job_id)
            if known is not None and known[0] == spec:
                return known[1]
        fields = spec.model_dump(mode="json", exclude={"extra"})
        lm = self._get({**fields, "request_kwargs": dict(spec.extra)})
        if job_id is not None:
            if len(self._by_job) >= _JOBS_REMEMBERED:
                self._by_job.clear()  # rebuilt from the content-keyed clients, cheaply
            self._by_job[job_id] = (spec, lm)
        return lm

    def for_settings(self, settings: LMSettings) -> LM:
        """The LM of a program predictor's own settings, under the same rules."""
        return self._get(settings.model_dump(mode="json"))

    async def aclose(self) -> None:
        """Write pending cache entries and close this loop's shared HTTP client."""
        for lm in self._lms.values():
            await lm.aclose()
        await aclose_client()  # also when no LM was built: the client may exist all the same

    def _get(self, fields: dict[str, Any]) -> LM:
        key = content_id(fields)
        if key in self._lms:
            return self._lms[key]
        if key in self._refused:
            refused = self._refused[key]
            raise type(refused)(str(refused))
        try:
            lm = self._build(fields)
        except (SecurityPolicyError, ConfigurationError) as exc:
            self._refused[key] = exc
            raise
        self._lms[key] = lm
        return lm

    def _build(self, fields: dict[str, Any]) -> LM:
        options = dict(fields)
        request_kwargs = options.pop("request_kwargs", {})
        _check_request_options(request_kwargs)
        model = options.pop("model")
        use_cache = bool(options.pop("cache", True)) and self.cache_dir is not None
        lm = LM(model, **options, cache=use_cache, cache_dir=self.cache_dir, **request_kwargs)
        # Checked on the built LM: its defaults (the provider's API base and key variable) count too.
        self.policy.check_lm(lm.api_base, lm.api_key_env)
        if self.endpoints is None:
            return lm
        base = lm.api_base
        return lm.copy(limiter=self.endpoints.limiter(base), breaker=self.endpoints.breaker(base))


def _check_request_options(options: dict[str, Any]) -> None:
    taken = sorted(_CLIENT_ARGUMENTS & options.keys())
    if taken:
        raise SecurityPolicyError(
            f"LM request options {taken} are the worker's own settings and may not come from a job "
            "or a program (keys come from the worker's environment only)"
        )

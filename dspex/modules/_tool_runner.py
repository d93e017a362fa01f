"""Running one agent turn's tool calls: concurrently, each with a timeout, retries and a circuit breaker.

:class:`ReActV2 <dspex.modules.react_v2.ReActV2>` hands a turn's calls to a :class:`ToolRunner`.
The calls start together (an async tool on the event loop, a sync one in a worker thread, as
:meth:`dspex.Tool.acall` does), so a turn that queries three services waits for the slowest, not for
the sum; the results come back in call order. Nothing a tool does crashes the turn: an unknown
name, invalid arguments, an exception, a timeout, a result JSON cannot hold, or an open breaker
each become an error observation for the LM (``is_error=True``).

How each tool is run is its :class:`ToolPolicy`:

    @tool_policy(timeout_s=2.0, retries=2, service="vector-db")
    def search(query: str) -> list[str]: ...

    @tool_policy(run_alone=True)          # never runs at the same time as the turn's other calls
    def write_file(path: str, text: str) -> str: ...

    ReActV2("question -> answer", tools=[search, write_file],
            policies={"search": ToolPolicy(timeout_s=5.0)})   # overrides the decorator

A breaker is kept per ``service`` (by default the tool's name), shared by every call of the agent
(and by its copies): after ``failure_threshold`` consecutive failed attempts it opens, and for
``open_s`` seconds (doubling while probes fail, up to ``max_open_s``) the tool is not called: the
LM is told ``"Tool search unavailable, circuit open ..."``. Then one call probes the service; its
success closes the breaker (:class:`dspex.lm.breaker.CircuitBreaker`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, NamedTuple, Self, TypeVar

from pydantic_core import to_jsonable_python

from dspex.adapters.types.tool import Tool, ToolCalls
from dspex.errors import ConfigurationError
from dspex.lm.breaker import BreakerState, CircuitBreaker
from dspex.utils.callback import active_callbacks
from dspex.utils.tool_timings import timed_tool_call

__all__ = ["POLICY_ATTRIBUTE", "ToolOutcome", "ToolPolicy", "ToolRunner", "error_for_lm", "tool_policy"]

# The attribute @tool_policy sets on a function; ReActV2 reads it from a tool's ``func``.
POLICY_ATTRIBUTE: Final = "__dspex_tool_policy__"
_TRACEBACK_FRAMES: Final = 5  # DSPy's format_error_for_lm(err, traceback_frames=5)

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToolPolicy:
    """How one tool's calls are run.

    - ``timeout_s``: seconds an attempt may take (None: no limit). A sync tool that overruns is
      abandoned, not stopped: its thread finishes in the background.
    - ``retries``: further attempts after a failed one, ``retry_backoff_s`` apart (doubling).
    - ``run_alone``: the call runs with none of the turn's other calls at the same time (after the
      calls before it, before the calls after it), for tools that are not safe to overlap.
    - ``service``: the name of the breaker (several tools of one service share it); default the
      tool's name. ``failure_threshold``, ``open_s`` and ``max_open_s`` shape that breaker (the
      first policy that names a service sets them).
    - ``failure_types``: the exceptions that mean the service failed: they are retried and counted
      by the breaker. A timeout always counts. Other exceptions go to the LM at once.
    """

    timeout_s: float | None = None
    retries: int = 0
    retry_backoff_s: float = 0.2
    run_alone: bool = False
    service: str | None = None
    failure_threshold: int = 5
    open_s: float = 5.0
    max_open_s: float = 60.0
    failure_types: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        problems = [
            "timeout_s > 0" if self.timeout_s is not None and self.timeout_s <= 0 else "",
            "retries >= 0" if self.retries < 0 else "",
            "retry_backoff_s >= 0" if self.retry_backoff_s < 0 else "",
            "failure_threshold >= 1" if self.failure_threshold < 1 else "",
            "0 < open_s <= max_open_s" if not 0 < self.open_s <= self.max_open_s else "",
        ]
        wrong = [problem for problem in problems if problem]
        if wrong:
            raise ConfigurationError(f"ToolPolicy needs {', '.join(wrong)}; got {self}")
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.failure_types):
            raise ConfigurationError(
                f"ToolPolicy.failure_types takes exception classes, got {self.failure_types}"
            )


def tool_policy(**fields: Any) -> Callable[[F], F]:
    """Decorator: give a tool function its :class:`ToolPolicy` (the keyword arguments are its fields).

    The policy travels with the function (also when a saved agent imports it in a worker).
    """
    policy = ToolPolicy(**fields)

    def attach(func: F) -> F:
        setattr(func, POLICY_ATTRIBUTE, policy)
        return func

    return attach


class ToolOutcome(NamedTuple):
    """What one call gives the LM: the tool's value, or an error text with ``is_error``; ``kind``
    says which error (``invalid``: nothing ran; ``unavailable``: the circuit was open)."""

    value: Any
    is_error: bool = False
    kind: str = "ok"


class ToolRunner:
    """Runs turns of tool calls under per-tool policies; keeps one breaker per service.

    ``policies`` by tool name win over a policy set on the tool's function with :func:`tool_policy`,
    which wins over ``default``. Copies of the runner (``copy.deepcopy`` of an agent) share it.
    """

    def __init__(
        self, policies: Mapping[str, ToolPolicy] | None = None, default: ToolPolicy | None = None
    ) -> None:
        self.policies: dict[str, ToolPolicy] = dict(policies or {})
        self.default = default or ToolPolicy()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()  # breakers are made lazily, possibly from several threads

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self  # the services are the same ones: a copy of the agent must see the same breakers

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers made so far, by service name (e.g. to add a metrics listener)."""
        with self._lock:
            return dict(self._breakers)

    def policy(self, name: str, tool: Tool | None) -> ToolPolicy:
        """The policy of the tool called ``name``."""
        if name in self.policies:
            return self.policies[name]
        attached = getattr(getattr(tool, "func", None), POLICY_ATTRIBUTE, None)
        return attached if isinstance(attached, ToolPolicy) else self.default

    def breaker(self, name: str, policy: ToolPolicy) -> CircuitBreaker:
        """The breaker of the tool's service, made on first use."""
        key = policy.service or name
        with self._lock:
            breaker = self._breakers.get(key)
            made = breaker is None
            if breaker is None:
                breaker = self._breakers[key] = CircuitBreaker(
                    f"tool {key}",
                    failure_threshold=policy.failure_threshold,
                    open_s=policy.open_s,
                    max_open_s=policy.max_open_s,
                    on_change=_BreakerAnnouncer(key),
                )
        if made:  # a new service: its series exists (closed) before its first change
            _announce_breaker_state(key, "closed")
        return breaker

    async def run_turn(
        self,
        tools: Mapping[str, Tool],
        calls: Sequence[ToolCalls.ToolCall],
        *,
        last: Collection[str] = (),
    ) -> list[ToolOutcome]:
        """Every call's outcome, in call order; calls of a tool named in ``last`` run after the others
        (one after another), the others concurrently except those whose policy says ``run_alone``."""
        outcomes: list[ToolOutcome | None] = [None] * len(calls)
        first = [i for i, call in enumerate(calls) if call.name not in last]
        for batch in _batches(first, lambda i: self._alone(tools, calls[i].name)):
            results = await asyncio.gather(*(self.run_call(tools, calls[i]) for i in batch))
            for index, outcome in zip(batch, results, strict=True):
                outcomes[index] = outcome
        for index, call in enumerate(calls):
            if call.name in last:
                outcomes[index] = await self.run_call(tools, call, guarded=False)
        return [outcome for outcome in outcomes if outcome is not None]

    def _alone(self, tools: Mapping[str, Tool], name: str) -> bool:
        tool = tools.get(name)
        return tool is not None and self.policy(name, tool).run_alone

    async def run_call(
        self, tools: Mapping[str, Tool], call: ToolCalls.ToolCall, *, guarded: bool = True
    ) -> ToolOutcome:
        """One call's outcome (never raises but for cancellation); ``guarded=False``: no timeout,
        retries or breaker (ReActV2's own ``submit``). Timed into the run's tool log
        (:mod:`dspex.utils.tool_timings`), retries and backoff included."""
        with timed_tool_call(call.name) as timing:
            outcome = await self._run_call(tools, call, guarded)
            timing.outcome = outcome.kind
        return outcome

    async def _run_call(
        self, tools: Mapping[str, Tool], call: ToolCalls.ToolCall, guarded: bool
    ) -> ToolOutcome:
        tool = tools.get(call.name)
        if tool is None:
            known = ", ".join(tools)
            return ToolOutcome(
                f"Unknown tool: {call.name}. The available tools are: {known}.", True, "invalid"
            )
        arguments = call.args or {}
        try:
            _check_arguments(tool, arguments)
        except ValueError as exc:
            return ToolOutcome(f"Invalid arguments for {call.name}: {exc}", True, "invalid")
        if not guarded:
            return await _attempt_unguarded(call.name, tool, arguments)
        policy = self.policy(call.name, tool)
        return await self._attempts(call.name, tool, arguments, policy)

    async def _attempts(
        self, name: str, tool: Tool, arguments: dict[str, Any], policy: ToolPolicy
    ) -> ToolOutcome:
        breaker = self.breaker(name, policy)
        failed: BaseException | None = None
        for attempt in range(policy.retries + 1):
            if attempt:
                await asyncio.sleep(policy.retry_backoff_s * 2 ** (attempt - 1))
            probe = breaker.try_acquire()
            if probe is None:
                return _unavailable(name, policy.service, failed)
            try:
                value = await asyncio.wait_for(tool.acall(**arguments), policy.timeout_s)
            except TimeoutError as exc:  # asyncio's timeout, or the tool's own: the service did not answer
                breaker.record_failure(probe)
                failed = exc if str(exc) else TimeoutError(f"timed out after {policy.timeout_s:g} s")
            except Exception as exc:
                if not isinstance(exc, policy.failure_types):
                    breaker.record_success(probe)  # the service answered; the error is the call's own
                    return _error(name, exc, attempt + 1)
                breaker.record_failure(probe)
                failed = exc
            except BaseException:  # cancelled: no verdict on the service
                breaker.abandon(probe)
                raise
            else:
                breaker.record_success(probe)
                return _observation(name, value)
        assert failed is not None  # the loop ran at least once and every attempt failed
        return _error(name, failed, policy.retries + 1)


class _BreakerAnnouncer:
    """A breaker's listener: tells the callbacks in effect where the change happened (the calling
    turn's context) ``on_tool_breaker_state``, so metrics stay out of the programming model."""

    __slots__ = ("service",)

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, breaker: CircuitBreaker, state: BreakerState) -> None:
        _announce_breaker_state(self.service, state)

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self


def _announce_breaker_state(service: str, state: BreakerState) -> None:
    for callback in active_callbacks(None):
        hook = getattr(callback, "on_tool_breaker_state", None)
        if hook is None:  # a callback that does not subclass BaseCallback
            continue
        try:
            hook(service, state)
        except Exception:  # a callback's bug must not break the agent
            logger.warning("callback %r failed in on_tool_breaker_state", callback, exc_info=True)


def _batches(indices: Sequence[int], alone: Callable[[int], bool]) -> list[list[int]]:
    """Consecutive calls that may overlap share a batch; a call that runs alone has its own."""
    batches: list[list[int]] = []
    for index in indices:
        if alone(index) or not batches or alone(batches[-1][0]):
            batches.append([index])
        else:
            batches[-1].append(index)
    return batches


def _check_arguments(tool: Tool, arguments: Any) -> None:
    """ValueError saying what is wrong with ``arguments`` (not an object; unknown, missing or
    ill-typed arguments)."""
    if not isinstance(arguments, Mapping):
        raise ValueError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    args = tool.args or {}
    unknown = [] if tool.has_kwargs else sorted(set(arguments) - set(args))
    # as format_as_litellm_function_call tells the LM: an argument without a default is required
    missing = sorted(
        name for name, schema in args.items() if "default" not in schema and name not in arguments
    )
    if unknown or missing:
        raise ValueError(f"unknown arguments {unknown}, missing arguments {missing}; it takes {args}")
    tool.parse_arguments(arguments)


async def _attempt_unguarded(name: str, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
    try:
        value = await tool.acall(**arguments)
    except Exception as exc:
        return _error(name, exc, 1)
    return _observation(name, value)


def _observation(name: str, value: Any) -> ToolOutcome:
    """The value, when JSON can hold it (it goes into the history, which is sent and saved as JSON)."""
    try:
        to_jsonable_python(value)
    except (ValueError, TypeError) as exc:  # PydanticSerializationError is a ValueError
        return ToolOutcome(
            f"Execution error in {name}: it returned a {type(value).__name__}, which cannot be sent as "
            f"JSON ({exc}); the tool must return JSON-compatible data.",
            True,
            "error",
        )
    return ToolOutcome(value)


def _error(name: str, exc: BaseException, attempts: int) -> ToolOutcome:
    tried = f" ({attempts} attempts)" if attempts > 1 else ""
    return ToolOutcome(f"Execution error in {name}{tried}: {error_for_lm(exc)}", True, "error")


def _unavailable(name: str, service: str | None, failed: BaseException | None) -> ToolOutcome:
    of = f"its service {service!r}" if service and service != name else "it"
    last = f" The last attempt failed: {type(failed).__name__}: {failed}." if failed is not None else ""
    return ToolOutcome(
        f"Tool {name} unavailable, circuit open: {of} failed repeatedly and is not called for now.{last} "
        "Use another tool, or try it again in a later turn.",
        True,
        "unavailable",
    )


def error_for_lm(exc: BaseException) -> str:
    """DSPy's error text for the LM: the exception with its traceback (at most 5 frames).

    A timeout has no useful traceback: its message alone.
    """
    if isinstance(exc, TimeoutError) and exc.__traceback__ is None:
        return f"TimeoutError: {exc}"
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=_TRACEBACK_FRAMES)
    return "\n" + "".join(lines).strip()

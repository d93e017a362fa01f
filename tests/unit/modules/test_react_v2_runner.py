"""ReActV2's tool runner: one turn's calls run concurrently, report in call order, and never raise."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from dspex.adapters.types import Tool, ToolCalls
from dspex.errors import ConfigurationError
from dspex.lm.breaker import CircuitBreaker
from dspex.modules import ToolPolicy, tool_policy
from dspex.modules._tool_runner import ToolRunner


def calls(*items: tuple[str, dict[str, Any]]) -> list[ToolCalls.ToolCall]:
    return [ToolCalls.ToolCall(id=f"c{i}", name=name, args=args) for i, (name, args) in enumerate(items)]


def tools(*funcs: Any) -> dict[str, Tool]:
    built = [func if isinstance(func, Tool) else Tool(func) for func in funcs]
    return {tool.name or "": tool for tool in built}


async def test_async_calls_of_one_turn_overlap() -> None:
    started, all_in = 0, asyncio.Event()

    async def probe(n: int) -> int:
        """Waits until all three calls have started: sequential calls would never get there."""
        nonlocal started
        started += 1
        if started == 3:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)
        return n

    outcomes = await ToolRunner().run_turn(tools(probe), calls(*[("probe", {"n": n}) for n in range(3)]))
    assert [o.value for o in outcomes] == [0, 1, 2] and not any(o.is_error for o in outcomes)


async def test_sync_calls_of_one_turn_run_in_threads_at_once() -> None:
    barrier = threading.Barrier(3, timeout=5)  # breaks (BrokenBarrierError) unless three threads meet

    def meet(n: int) -> int:
        """Blocks until three calls are inside it."""
        barrier.wait()
        return n

    outcomes = await ToolRunner().run_turn(tools(meet), calls(*[("meet", {"n": n}) for n in range(3)]))
    assert [o.value for o in outcomes] == [0, 1, 2] and not any(o.is_error for o in outcomes)


async def test_a_turn_takes_the_slowest_call_not_the_sum() -> None:
    spans: list[tuple[float, float]] = []

    def slow(n: int) -> int:
        """Sleeps 0.5 s."""
        started = time.monotonic()
        time.sleep(0.5)
        spans.append((started, time.monotonic()))
        return n

    await ToolRunner().run_turn(tools(slow), calls(*[("slow", {"n": n}) for n in range(3)]))
    # the three calls overlapped (each started before any ended): one after another, none would,
    # and the calls' own times show it whatever a loaded machine does to the turn's total
    assert len(spans) == 3 and max(s for s, _ in spans) < min(e for _, e in spans)


async def test_results_come_in_call_order_whatever_order_they_finish_in() -> None:
    async def wait(seconds: float) -> float:
        """Sleeps, returns the seconds."""
        await asyncio.sleep(seconds)
        return seconds

    turn = calls(("wait", {"seconds": 0.2}), ("wait", {"seconds": 0.0}), ("wait", {"seconds": 0.1}))
    outcomes = await ToolRunner().run_turn(tools(wait), turn)
    assert [o.value for o in outcomes] == [0.2, 0.0, 0.1]


async def test_calls_named_last_run_after_all_the_others() -> None:
    log: list[str] = []

    async def fetch(key: str) -> str:
        """Slow fetch."""
        await asyncio.sleep(0.05)
        log.append(f"fetch {key}")
        return key

    def submit(answer: str) -> dict[str, str]:
        """Final."""
        log.append("submit")
        return {"answer": answer}

    turn = calls(("submit", {"answer": "x"}), ("fetch", {"key": "a"}), ("fetch", {"key": "b"}))
    outcomes = await ToolRunner().run_turn(tools(fetch, submit), turn, last=("submit",))
    assert log[-1] == "submit" and sorted(log[:2]) == ["fetch a", "fetch b"]
    assert [o.value for o in outcomes] == [{"answer": "x"}, "a", "b"]  # still in call order


async def test_a_tool_that_runs_alone_never_overlaps_the_others() -> None:
    running, overlapped = 0, []

    async def track(name: str) -> None:
        nonlocal running
        running += 1
        overlapped.append((name, running))
        await asyncio.sleep(0.05)
        running -= 1

    async def read(key: str) -> str:
        """Shared."""
        await track("read")
        return key

    @tool_policy(run_alone=True)
    async def write(key: str) -> str:
        """Must run alone."""
        await track("write")
        return key

    turn = calls(
        ("read", {"key": "1"}), ("read", {"key": "2"}), ("write", {"key": "3"}), ("read", {"key": "4"})
    )
    outcomes = await ToolRunner().run_turn(tools(read, write), turn)
    assert [o.value for o in outcomes] == ["1", "2", "3", "4"]
    assert ("write", 1) in overlapped  # it ran by itself...
    assert max(count for _, count in overlapped) == 2  # ...while the first two reads overlapped
    assert [name for name, _ in overlapped] == ["read", "read", "write", "read"]  # order kept


def returns_object(x: int) -> object:
    """Returns something JSON cannot hold."""
    return object()


def raises(x: int) -> int:
    """Always fails."""
    raise RuntimeError("backend exploded")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (("nope", {}), "Unknown tool: nope. The available tools are: returns_object, raises."),
        (("raises", {"x": "not a number"}), "Invalid arguments for raises: "),
        (
            ("raises", {"y": 1}),
            "Invalid arguments for raises: unknown arguments ['y'], missing arguments ['x']",
        ),
        (("raises", {"x": 1}), "Execution error in raises: \nTraceback"),
        (
            ("returns_object", {"x": 1}),
            "Execution error in returns_object: it returned a object, which cannot",
        ),
    ],
)
async def test_whatever_goes_wrong_is_an_error_observation(
    call: tuple[str, dict[str, Any]], expected: str
) -> None:
    [outcome] = await ToolRunner().run_turn(tools(returns_object, raises), calls(call))
    assert outcome.is_error and outcome.value.startswith(expected)
    if call[0] == "raises" and "x" in call[1] and call[1]["x"] == 1:
        assert "RuntimeError: backend exploded" in outcome.value


async def test_a_call_over_its_timeout_is_an_error_and_the_turn_goes_on() -> None:
    @tool_policy(timeout_s=0.05)
    async def hang() -> str:
        """Never answers in time."""
        await asyncio.sleep(5)
        return "late"

    async def quick() -> str:
        """Answers."""
        return "ok"

    start = time.perf_counter()
    outcomes = await ToolRunner().run_turn(tools(hang, quick), calls(("hang", {}), ("quick", {})))
    assert time.perf_counter() - start < 2
    assert outcomes[0].is_error and "timed out after 0.05 s" in outcomes[0].value
    assert (outcomes[1].value, outcomes[1].is_error) == ("ok", False)


async def test_failed_attempts_are_retried_up_to_the_policy() -> None:
    attempts = 0

    @tool_policy(retries=2, retry_backoff_s=0.0)
    def flaky() -> str:
        """Fails twice, then answers."""
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("refused")
        return "ok"

    [outcome] = await ToolRunner().run_turn(tools(flaky), calls(("flaky", {})))
    assert (outcome.value, outcome.is_error) == ("ok", False) and attempts == 3


async def test_errors_outside_failure_types_are_not_retried() -> None:
    attempts = 0

    def picky(x: int) -> int:
        """Rejects its input."""
        nonlocal attempts
        attempts += 1
        raise KeyError(x)

    policy = ToolPolicy(retries=3, retry_backoff_s=0.0, failure_types=(ConnectionError,))
    runner = ToolRunner({"picky": policy})
    [outcome] = await runner.run_turn(tools(picky), calls(("picky", {"x": 1})))
    assert outcome.is_error and attempts == 1 and runner.breakers["picky"].state == "closed"


async def until_half_open(breaker: CircuitBreaker, within_s: float = 30.0) -> None:
    """Wait for the breaker's open time to pass (polled: a fixed sleep is too short under load)."""
    deadline = time.monotonic() + within_s
    while breaker.state != "half_open":
        assert time.monotonic() < deadline, f"still {breaker.state} after {within_s} s"
        await asyncio.sleep(0.01)


async def test_the_breaker_opens_stops_calls_then_half_opens_and_closes() -> None:
    state = {"up": False, "calls": 0}

    def lookup(q: str) -> str:
        """A service that may be down."""
        state["calls"] += 1
        if not state["up"]:
            raise ConnectionRefusedError("connection refused")
        return f"found {q}"

    # open for 1 s: the refused calls below come well within it, even on a loaded machine
    runner = ToolRunner(default=ToolPolicy(failure_threshold=2, open_s=1.0, max_open_s=1.0))
    box = tools(lookup)
    one = calls(("lookup", {"q": "a"}))
    for _ in range(2):  # two failures: the breaker opens
        [outcome] = await runner.run_turn(box, one)
        assert outcome.is_error and "ConnectionRefusedError" in outcome.value
    breaker = runner.breakers["lookup"]
    assert breaker.state == "open"
    outcomes = await runner.run_turn(box, calls(*[("lookup", {"q": "a"})] * 3))
    assert all(o.is_error and o.value.startswith("Tool lookup unavailable, circuit open") for o in outcomes)
    assert state["calls"] == 2  # not called while open

    await until_half_open(breaker)
    state["up"] = True
    outcomes = await runner.run_turn(box, calls(("lookup", {"q": "a"}), ("lookup", {"q": "b"})))
    # one call is the probe; the other, started while the probe was out, is told to wait for a later turn
    assert sorted(o.is_error for o in outcomes) == [False, True] and state["calls"] == 3
    assert breaker.state == "closed"
    [outcome] = await runner.run_turn(box, calls(("lookup", {"q": "c"})))
    assert (outcome.value, outcome.is_error) == ("found c", False)


async def test_a_failed_probe_reopens_the_breaker_for_longer() -> None:
    def down() -> str:
        """Always refused."""
        raise ConnectionRefusedError("refused")

    runner = ToolRunner(default=ToolPolicy(failure_threshold=1, open_s=0.1, max_open_s=1.0))
    await runner.run_turn(tools(down), calls(("down", {})))
    breaker = runner.breakers["down"]
    await until_half_open(breaker)
    before_probe = time.monotonic()
    await runner.run_turn(tools(down), calls(("down", {})))  # the probe fails
    assert breaker.opened == 2
    await until_half_open(breaker)
    # open for 0.2 s this time: measured from before the probe, a lower bound no stall can break
    assert time.monotonic() - before_probe >= 0.2


async def test_tools_naming_one_service_share_its_breaker() -> None:
    @tool_policy(service="db", failure_threshold=1, open_s=5.0)
    def read() -> str:
        """Reads."""
        raise ConnectionError("down")

    @tool_policy(service="db")
    def write() -> str:
        """Writes."""
        return "never called"

    runner = ToolRunner()
    await runner.run_turn(tools(read, write), calls(("read", {})))
    [outcome] = await runner.run_turn(tools(read, write), calls(("write", {})))
    assert outcome.is_error and "its service 'db' failed" in outcome.value
    assert list(runner.breakers) == ["db"]


def test_policies_given_by_name_win_over_the_decorator_and_the_default() -> None:
    @tool_policy(timeout_s=1.0)
    def a() -> None:
        """A."""

    def b() -> None:
        """B."""

    default, named = ToolPolicy(retries=1), ToolPolicy(timeout_s=9.0)
    runner = ToolRunner({"a": named}, default)
    box = tools(a, b)
    assert runner.policy("a", box["a"]) is named and runner.policy("b", box["b"]) is default
    assert ToolRunner().policy("a", box["a"]).timeout_s == 1.0


@pytest.mark.parametrize(
    "fields",
    [{"timeout_s": 0}, {"retries": -1}, {"failure_threshold": 0}, {"open_s": 5, "max_open_s": 1}],
)
def test_impossible_policies_are_configuration_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="ToolPolicy needs"):
        ToolPolicy(**fields)

"""WorkerProcesses: calls answered by worker processes over sockets the event loop reads."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from aggregator.workers import WorkerDied, WorkerProcesses


def echo_after(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise ValueError(message)


def unpicklable(_: object) -> object:
    return lambda: None


def own_pid(_: object = None) -> int:
    return os.getpid()


def test_calls_return_in_any_order_and_each_caller_gets_its_own_answer():
    async def main():
        async with WorkerProcesses(echo_after, workers=2) as workers:
            # More calls than the workers queue (2 x 8): the rest wait for room.
            delays = [0.02 * (n % 3) for n in range(40)]
            return await asyncio.gather(*(workers.call(delay, n) for n, delay in enumerate(delays)))

    assert asyncio.run(main()) == list(range(40))


def test_calls_run_in_the_workers_not_in_the_caller():
    async def main():
        async with WorkerProcesses(own_pid, workers=2) as workers:
            pids = set(await asyncio.gather(*(workers.call(n) for n in range(20))))
            return pids, set(workers.pids)

    pids, worker_pids = asyncio.run(main())
    assert os.getpid() not in pids
    assert pids <= worker_pids and len(worker_pids) == 2


def test_an_exception_in_the_function_reaches_the_caller_and_the_worker_goes_on():
    async def main():
        async with WorkerProcesses(fail, workers=1) as failing:
            with pytest.raises(ValueError, match="no such feed"):
                await failing.call("no such feed")
            with pytest.raises(ValueError, match="again"):
                await failing.call("again")
            return len(failing.pids)

    assert asyncio.run(main()) == 1


def test_a_result_that_cannot_travel_fails_that_call_only():
    async def main():
        async with WorkerProcesses(unpicklable, workers=1) as workers:
            with pytest.raises(Exception, match="pickle|lambda"):
                await workers.call(None)
            with pytest.raises(Exception, match="pickle|lambda"):
                await workers.call(None)
            return len(workers.pids)

    assert asyncio.run(main()) == 1


def test_a_cancelled_caller_leaves_its_reply_behind_not_in_the_next_callers_hands():
    async def main():
        async with WorkerProcesses(echo_after, workers=1) as workers:
            slow = asyncio.create_task(workers.call(0.3, "slow"))
            await asyncio.sleep(0.1)
            slow.cancel()
            return await workers.call(0, "next")

    assert asyncio.run(main()) == "next"


def test_a_killed_worker_fails_its_calls_and_the_others_answer_the_rest():
    async def main():
        async with WorkerProcesses(echo_after, workers=2) as workers:
            await asyncio.gather(workers.call(0, "warm"), workers.call(0, "up"))
            victim, survivor = workers.pids
            calls = [asyncio.create_task(workers.call(0.2, n)) for n in range(4)]
            await asyncio.sleep(0.05)
            os.kill(victim, signal.SIGKILL)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            after = await workers.call(0, "after")
            return outcomes, after, workers.pids, survivor

    outcomes, after, pids, survivor = asyncio.run(main())
    assert any(isinstance(outcome, WorkerDied) for outcome in outcomes)
    assert all(outcome == n for n, outcome in enumerate(outcomes) if not isinstance(outcome, WorkerDied))
    assert after == "after" and pids == [survivor]


def test_once_every_worker_is_dead_each_call_says_so_instead_of_waiting():
    async def main():
        async with WorkerProcesses(echo_after, workers=1) as workers:
            await workers.call(0, "up")
            os.kill(workers.pids[0], signal.SIGKILL)
            results = []
            for _ in range(2):
                try:
                    results.append(await asyncio.wait_for(workers.call(0, "x"), 10))
                except WorkerDied as exc:
                    results.append(str(exc))
            return results

    first, second = asyncio.run(main())
    assert "died" in first and second == "every worker process has died"


def test_close_stops_every_worker():
    async def main():
        workers = WorkerProcesses(echo_after, workers=2)
        await workers.call(0, "up")
        pids = workers.pids
        await workers.close()
        return pids

    for pid in asyncio.run(main()):
        deadline = time.monotonic() + 10
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid), f"worker {pid} still running after close()"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

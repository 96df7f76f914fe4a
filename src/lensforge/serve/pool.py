"""A bounded worker pool: at most `workers` predictions run at once, at most `queue` more wait,
and a request that has not got its answer within `timeout` seconds gets 503 instead of hanging.

Admission is an asyncio semaphore with exactly as many slots as the thread pool has threads, so
the executor's own (unbounded) queue is never used: what waits, waits here, where it can be
counted, refused when the queue is full and timed out. A prediction that overruns the timeout
cannot be killed (a thread in the middle of a torch op) but it keeps its slot until it really
ends, so the pool never runs more than `workers` models at once however many clients give up.
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Busy(Exception):
    """No answer in time (queue full, no worker free, or the model still running): HTTP 503."""


class WorkerPool:
    def __init__(self, workers: int = 1, queue: int = 64, timeout: float = 30.0):
        self.workers, self.queue, self.timeout = int(workers), int(queue), float(timeout)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="lensforge-serve")
        self._slots: asyncio.Semaphore | None = None
        self.running = 0    # predictions on a worker now (including ones whose client gave up)
        self.waiting = 0    # requests waiting for a worker
        self.served = 0
        self.refused = 0

    def _semaphore(self) -> asyncio.Semaphore:
        # Created on first use, inside the server's event loop.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        return self._slots

    def stats(self) -> dict:
        return {"workers": self.workers, "running": self.running, "waiting": self.waiting,
                "queue_limit": self.queue, "timeout_s": self.timeout, "served": self.served,
                "refused": self.refused}

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on a worker thread; Busy when it cannot be answered within the timeout."""
        loop = asyncio.get_running_loop()
        slots = self._semaphore()
        deadline = loop.time() + self.timeout
        if slots.locked() and self.waiting >= self.queue:
            self.refused += 1
            raise Busy(f"server busy: {self.waiting} requests already waiting for a worker; try again later")
        self.waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), self.timeout)
        except asyncio.TimeoutError:
            self.refused += 1
            raise Busy(f"server busy: no worker became free within --timeout {self.timeout:g} s; "
                       "try again later") from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            fut = loop.run_in_executor(self._executor, fn, *args)
        except BaseException:
            self.running -= 1
            slots.release()
            raise

        def done(_f) -> None:
            self.running -= 1
            slots.release()
            if not _f.cancelled():
                _f.exception()    # retrieved here, so an abandoned failure is not logged as "never retrieved"

        fut.add_done_callback(done)
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self.refused += 1
            raise Busy(f"the model did not answer within --timeout {self.timeout:g} s; try again later "
                       "or with a smaller image") from None
        self.served += 1
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def set_threads(workers: int, threads: int | None) -> int:
    """Torch intra-op threads so that workers x threads fills the cores once, not several times over."""
    import torch

    n = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    torch.set_num_threads(n)
    return n

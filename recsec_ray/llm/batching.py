"""A micro-batching queue: jobs from many concurrent callers become few padded batches.

Callers ``submit`` jobs and get futures. One worker thread groups pending jobs by what must be
computed together (call, model, adapter, params), waits up to ``max_wait_s`` for a batch to
fill, and hands ``run_batch`` at most ``max_batch`` jobs of similar length (less padding). The
oldest pending job is always in the next batch of its group, so nothing starves.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .backend import Job, job_length

_WINDOW = 8  # batches' worth of pending jobs sorted by length when picking the next batch


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Job]], list[Any]], max_batch: int,
                 max_wait_s: float, name: str = "llm-batcher",
                 group: Callable[[Job], Any] | None = None) -> None:
        """``group``: a further key jobs must share to be batched (the transformers backend's
        padding width: it runs each width apart anyway, so a batch of one width is a full
        forward pass rather than several partial ones)."""
        self._run = run_batch
        self._group = group
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queues: dict[tuple, deque[tuple[Job, Future, float]]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self.jobs = 0
        self.queue_wait_s = 0.0
        self.max_batch_seen = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, jobs: list[Job]) -> list[Future]:
        futures = [Future() for _ in jobs]
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            for job, fut in zip(jobs, futures):
                key = (job.call, job.model, job.adapter, job.params,
                       self._group(job) if self._group else None)
                self._queues.setdefault(key, deque()).append((job, fut, now))
            self._cond.notify()
        return futures

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _next_batch(self) -> list[tuple[Job, Future, float]] | None:
        """Block until a batch is due; None when closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                live = {k: q for k, q in self._queues.items() if q}
                if not live:
                    self._cond.wait()
                    continue
                key = min(live, key=lambda k: live[k][0][2])
                q = live[key]
                due = q[0][2] + self.max_wait_s - time.monotonic()
                if len(q) >= self.max_batch or due <= 0:
                    return self._take(q)
                self._cond.wait(timeout=due)

    def _take(self, q: deque) -> list[tuple[Job, Future, float]]:
        window = [q.popleft() for _ in range(min(len(q), self.max_batch * _WINDOW))]
        head = window[0]
        window.sort(key=lambda e: job_length(e[0]))
        at = window.index(head)
        start = max(0, min(at - self.max_batch // 2, len(window) - self.max_batch))
        batch = window[start:start + self.max_batch]
        rest = window[:start] + window[start + self.max_batch:]
        rest.sort(key=lambda e: e[2])
        q.extendleft(reversed(rest))
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            live = [e for e in batch if e[1].set_running_or_notify_cancel()]
            if not live:
                continue
            now = time.monotonic()
            self.batches += 1
            self.jobs += len(live)
            self.max_batch_seen = max(self.max_batch_seen, len(live))
            self.queue_wait_s += sum(now - e[2] for e in live)
            try:
                results = self._run([e[0] for e in live])
            except BaseException as err:  # noqa: BLE001 - every caller must hear about it
                for e in live:
                    e[1].set_exception(err)
                continue
            for e, r in zip(live, results):
                e[1].set_result(r)
        with self._cond:
            pending = [e for q in self._queues.values() for e in q]
            self._queues.clear()
        for e in pending:
            if e[1].set_running_or_notify_cancel():
                e[1].set_exception(RuntimeError("the LLM service was closed"))

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "batched_jobs": self.jobs,
                "max_batch_seen": self.max_batch_seen,
                "mean_batch": self.jobs / self.batches if self.batches else 0.0,
                "queue_wait_s": self.queue_wait_s,
                "mean_queue_wait_s": self.queue_wait_s / self.jobs if self.jobs else 0.0}

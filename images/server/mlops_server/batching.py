"""Adaptive micro-batching: concurrent requests share one model call.

Policy (default, `max_delay == 0`):
- when the model is idle, a request's batch starts on the next loop iteration, so requests
  that arrived in the same socket poll join it, and nobody waits for a timer;
- requests arriving while a batch computes queue up and form the next batch when it ends,
  bounded by `max_rows` (a single larger request runs alone, never split);
- when a batch ends, its clients have just been answered and typically send their next request
  within a fraction of a millisecond. Starting the queued rows at once would split the clients
  into two groups that alternate forever, each paying a full model call. So the next batch
  lingers until the queue holds as many rows as were just in flight (answered + queued), but
  never longer than a quarter of the recent batch compute time (EWMA, capped at 5 ms). For a
  model whose cost hardly depends on batch size (a 100-tree forest) this doubles throughput
  *and* lowers latency; for a cheap model the linger is a few tens of microseconds.
With `max_delay > 0`, that fixed delay replaces the adaptive linger, and an idle batcher also
waits up to that long for `max_rows` rows.

Batches run one at a time on a single worker thread, so the event loop keeps parsing and
answering (health, metrics, the next requests) while the model computes. A batch that fails
is retried request by request, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Final, Union

import numpy as np

from mlops_server import logs
from mlops_server.codec import Array, Prediction

log = logs.get("batching")

Outcome = Union[Prediction, BaseException]  # noqa: UP007 - a runtime alias
Callback = Callable[[Outcome], None]
PredictFn = Callable[[Array, bool], Prediction]
ObserveFn = Callable[[Array, Prediction], None]

LINGER_FRACTION: Final = 0.25
LINGER_CAP: Final = 0.005
EWMA_WEIGHT: Final = 0.2


class _Job:
    __slots__ = ("callback", "frame", "want_proba")

    def __init__(self, frame: Array, want_proba: bool, callback: Callback) -> None:
        self.frame = frame
        self.want_proba = want_proba
        self.callback = callback


class Batcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        predict: PredictFn,
        executor: Executor,
        *,
        max_rows: int = 64,
        max_delay: float = 0.0,
        observe: ObserveFn | None = None,
        always_proba: bool = False,
    ) -> None:
        self._loop = loop
        # Probabilities on every model call, asked for or not (the accuracy estimate needs them).
        self._always_proba = always_proba
        self._predict = predict
        self._executor = executor
        self._max_rows = max_rows
        self._max_delay = max_delay
        self._observe = observe
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._busy = False
        self._scheduled: asyncio.Handle | None = None
        self._target = max_rows  # rows worth waiting for while a timer is pending
        self._compute = 0.0  # EWMA of a batch's compute seconds
        self.batches = 0  # model calls made (for tests and logs)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    def submit(self, frame: Array, want_proba: bool, callback: Callback) -> None:
        """Queue a frame; `callback` gets its Prediction (or the exception) on the loop thread."""
        self._queue.append(_Job(frame, want_proba, callback))
        self._queued_rows += len(frame)
        if self._busy:
            return
        if self._scheduled is not None:
            if self._queued_rows >= self._target and isinstance(self._scheduled, asyncio.TimerHandle):
                # Target reached: start on the next iteration, so this poll's requests still join.
                self._scheduled.cancel()
                self._scheduled = self._loop.call_soon(self._start)
            return
        if self._max_delay > 0 and self._queued_rows < self._max_rows:
            self._target = self._max_rows
            self._scheduled = self._loop.call_later(self._max_delay, self._start)
        else:
            self._scheduled = self._loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = None
        if self._busy or not self._queue:
            return
        jobs = [self._queue.popleft()]
        rows = len(jobs[0].frame)
        while self._queue and rows + len(self._queue[0].frame) <= self._max_rows:
            job = self._queue.popleft()
            rows += len(job.frame)
            jobs.append(job)
        self._queued_rows -= rows
        self._busy = True
        self.batches += 1
        future = self._executor.submit(self._timed_run, jobs)
        future.add_done_callback(lambda f: self._loop.call_soon_threadsafe(self._finish, jobs, rows, f))

    def _timed_run(self, jobs: list[_Job]) -> tuple[list[Outcome], float]:
        started = time.perf_counter()
        outcomes = self._run(jobs)
        return outcomes, time.perf_counter() - started

    def _run(self, jobs: list[_Job]) -> list[Outcome]:
        """Worker thread: one model call for all jobs, or one per job if the batch fails."""
        frame = jobs[0].frame if len(jobs) == 1 else np.concatenate([job.frame for job in jobs])
        want_proba = self._always_proba or any(job.want_proba for job in jobs)
        try:
            prediction = self._predict(frame, want_proba)
        except Exception as e:
            if len(jobs) == 1:
                return [e]
            return [self._run_one(job) for job in jobs]
        self._observed(frame, prediction)
        outcomes: list[Outcome] = []
        start = 0
        proba = prediction.proba
        for job in jobs:
            end = start + len(job.frame)
            outcomes.append(
                Prediction(prediction.labels[start:end], None if proba is None else proba[start:end])
            )
            start = end
        return outcomes

    def _run_one(self, job: _Job) -> Outcome:
        try:
            prediction = self._predict(job.frame, self._always_proba or job.want_proba)
        except Exception as e:
            return e
        self._observed(job.frame, prediction)
        return prediction

    def _observed(self, frame: Array, prediction: Prediction) -> None:
        if self._observe is None:
            return
        try:
            self._observe(frame, prediction)
        except Exception:  # monitoring must never fail a prediction
            log.exception("Failed to record a batch's metrics")

    def _finish(self, jobs: list[_Job], rows: int, future: Future[tuple[list[Outcome], float]]) -> None:
        self._busy = False
        try:
            outcomes, seconds = future.result()
            self._compute = (
                seconds if self._compute == 0.0 else self._compute + EWMA_WEIGHT * (seconds - self._compute)
            )
        except BaseException as e:  # the executor itself failed (e.g. shut down)
            outcomes = [e] * len(jobs)
        # Answer first: the answered clients' next requests are what the next batch lingers for.
        for job, outcome in zip(jobs, outcomes, strict=True):
            try:
                job.callback(outcome)
            except Exception:
                logging.getLogger(logs.LOGGER_NAME).exception("Failed to answer a request")
        if not self._queue or self._scheduled is not None:
            return
        self._target = min(self._max_rows, rows + self._queued_rows)
        if self._queued_rows >= self._target:
            self._start()
            return
        linger = self._max_delay if self._max_delay > 0 else min(LINGER_FRACTION * self._compute, LINGER_CAP)
        self._scheduled = self._loop.call_later(linger, self._start)

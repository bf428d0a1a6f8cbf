"""The inference engine behind `attnseg serve`: a bounded queue and one worker thread that batches requests.

Requests that arrive within `max_wait_ms` of each other and share model, input size, labels and ISR setting
run as one batch (up to `max_batch`). A full queue is refused at once (the caller answers 503 with
Retry-After); nothing waits unboundedly. Model code runs only on the worker thread, never on the event loop.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import memory
from ..inference.modes import infer
from ..inference.segmenter import upsample_argmax


class Overloaded(RuntimeError):
    """The queue is full."""


@dataclass
class Job:
    model: str
    x: torch.Tensor  # (1, 3, h, w), normalised, at the model's working size
    size: tuple[int, int]  # the image's (H, W): the label map comes back at this size
    labels: tuple[str, ...] | None = None
    isr: str | None = None
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0

    @property
    def key(self):
        return (self.model, tuple(self.x.shape[-2:]), self.labels, self.isr)


@dataclass
class Result:
    label: np.ndarray  # (H, W) int32 class / label indices
    latency_ms: float  # model time for the batch this request ran in
    queue_ms: float  # time between enqueueing and the start of its batch
    batch_size: int
    scores: torch.Tensor | None = None  # (K, h, w) the model's scores at its output resolution


class Batcher:
    def __init__(self, models: dict, max_batch: int = 8, max_wait_ms: float = 10.0, queue_size: int = 32,
                 on_batch=None):
        self.models = models  # name -> ServedModel (see app.py): .model, .set_isr(str | None)
        self.max_batch, self.max_wait = max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.on_batch = on_batch or (lambda n: None)
        self._held: list[Job] = []  # taken from the queue but not part of the batch being formed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attnseg-batcher", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return self.queue.qsize() + len(self._held)

    def submit(self, job: Job) -> Future:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"the inference queue is full ({self.queue.maxsize} requests); retry shortly") from None
        return job.future

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _next(self, timeout: float | None) -> Job | None:
        if self._held:
            return self._held.pop(0)
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            first = self._next(0.1)
            if first is None:
                continue
            batch, others = [first], []
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0 and not self._held:
                    break
                job = self._next(max(left, 0.0))
                if job is None:
                    break
                (batch if job.key == first.key else others).append(job)
            self._held = others + self._held
            batch = [j for j in batch if not j.future.cancelled()]
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[Job]) -> None:
        first = batch[0]
        served = self.models[first.model]
        t0 = time.perf_counter()
        for j in batch:
            j.started = t0
        try:
            with torch.inference_mode(), served.lock:
                served.set_isr(first.isr)
                kw = {"labels": list(first.labels)} if first.labels else {}
                scores = infer(served.model, torch.cat([j.x for j in batch]), served.segmenter.inference,
                               **kw).float()
            ms = (time.perf_counter() - t0) * 1000
            memory.after_run()
            self.on_batch(len(batch))
            for j, s in zip(batch, scores):
                label = upsample_argmax(s.cpu(), j.size)
                j.future.set_result(Result(label, ms, (j.started - j.enqueued) * 1000, len(batch), s.cpu()))
        except Exception as e:  # one bad batch fails its requests, never the worker
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(e)

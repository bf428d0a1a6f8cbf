"""`attnseg eval --engine ray` and `attnseg robustness --engine ray`: confusion matrices on a Ray cluster.

A row is (job, image index); a job is one variant of the dataset (the clean split, or one corruption at one
severity). Each actor builds its models and dataset once (`build()` -> `Evaluation`) and evaluates its batch
with the same `engine.evaluate.evaluate_models` as one process, returning one confusion matrix per job and
model for the batch. Confusion matrices are integer counts, so their sum over batches is the one-process
matrix exactly, whatever the order: the metrics are the same to the last bit.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import run_pool


@dataclass
class Evaluation:
    """What an actor evaluates: models by name as (model, mean, std, model keywords or None), the dataset of a
    job (`dataset_for(job)`), the inference settings, the device, the number of classes and the autocast dtype."""
    entries: dict
    dataset_for: Callable[[Any], Any]
    inference: Any
    device: str
    num_classes: int
    amp_dtype: Any = None


def _setup(build, jobs: list):
    from ..engine.evaluate import evaluate_models

    ev: Evaluation = build()
    names = list(ev.entries)

    def work(rows: list[dict]) -> list[dict]:
        by_job: dict[int, list[int]] = {}
        for r in rows:
            by_job.setdefault(int(r["job"]), []).append(int(r["i"]))
        out = []
        for j, idx in by_job.items():
            results = evaluate_models([ev.entries[n] for n in names], ev.dataset_for(jobs[j]), ev.inference,
                                      ev.device, ev.num_classes, amp_dtype=ev.amp_dtype, progress=False,
                                      indices=idx)
            out += [{"job": j, "model": n, "n": len(idx), "confusion": np.asarray(m["confusion"], np.int64)}
                    for n, m in zip(names, results)]
        return out

    return work


def evaluate(n_images: int, build, workers: int, threads: int | None = None, gpus: float = 0.0, batch: int = 4,
             jobs: list | None = None, on_result=None):
    """Confusion matrices {(job, model name): (K, K) int64} over images 0..n_images-1 of every job (default
    one job, None: the dataset as `build` gives it). `on_result(job, name, confusion)` is called as soon as a
    job's matrix for a model is complete. Returns (matrices, pool report)."""
    jobs = list(jobs) if jobs is not None else [None]
    sums: dict = {}
    seen: dict = {}

    def on_row(row):
        key = (int(row["job"]), row["model"])
        sums[key] = sums.get(key, 0) + np.asarray(row["confusion"], np.int64)
        seen[key] = seen.get(key, 0) + int(row["n"])
        if seen[key] == n_images and on_result is not None:
            on_result(jobs[key[0]], key[1], sums[key])

    items = [{"job": j, "i": i} for j in range(len(jobs)) for i in range(n_images)]
    report = run_pool(items, functools.partial(_setup, build, jobs), workers, threads, gpus, batch, on_row=on_row)
    return {(jobs[j], name): m for (j, name), m in sums.items()}, report

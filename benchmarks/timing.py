"""Timing shared by the CPU benchmarks: each timed variant runs in a process of its own, one at a time.

Timed in one process, PyTorch's OpenMP pool and every onnxruntime session's pool stay warm side by side
(onnxruntime's workers spin after each run), and the variant timed right after another ran up to a third
slower: SANet's int8/fp32 onnxruntime at 512x512 read 1.37x that way and 1.7-2.0x with each variant alone.
This machine's speed also drifts by 10-20% within a minute, which short interleaved rounds cancel: round r
asks every variant in turn for `iters` timed calls (after one untimed call) and gets back their median.
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import Callable

import torch


def time_once(fn, x, iters: int) -> float:
    """Median ms of `iters` calls after one untimed call (the first call after a pause is slower)."""
    fn(x)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def warm_up(fn, x, least: int = 3, most: int = 20) -> int:
    """Calls fn(x) until a call takes within 20% of the one before (at least `least`, at most `most` calls):
    eager models' first calls on CPU can each take 10x the steady time (oneDNN picks and builds its kernels),
    for more than two calls. Returns the number of calls."""
    prev = None
    for n in range(1, most + 1):
        t = time.perf_counter()
        fn(x)
        dt = time.perf_counter() - t
        if n >= least and prev is not None and abs(dt - prev) <= 0.2 * prev:
            return n
        prev = dt
    return most


def _serve(conn, make: Callable, args: tuple, threads: int, shape: tuple[int, ...]):
    torch.set_num_threads(threads)
    fn = make(*args)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        warm_up(fn, x)
        conn.send("ready")
        while (iters := conn.recv()) is not None:
            conn.send(time_once(fn, x, iters))


def time_interleaved(makers: dict[str, tuple[Callable, tuple]], shape: tuple[int, ...] | dict[str, tuple[int, ...]],
                     threads: int, rounds: int, iters: int) -> dict[str, list[float]]:
    """{key: per-round median ms}. makers[key] = (make, args): `make(*args)` runs in the worker process and
    returns the call to time on a (seeded) random tensor of `shape` (or of shape[key], one per maker); `make`
    must be a module-level function (workers are spawned)."""
    ctx = mp.get_context("spawn")
    workers = {}
    try:
        for key, (make, args) in makers.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, daemon=True,
                               args=(child, make, args, threads, shape[key] if isinstance(shape, dict) else shape))
            proc.start()
            child.close()  # the worker holds the only other end now: recv() sees EOF if it dies
            workers[key] = (parent, proc)
            try:  # "ready": built and warmed up before the next one starts
                while not parent.poll(0.5):
                    if not proc.is_alive():
                        raise EOFError
                parent.recv()
            except EOFError:
                raise RuntimeError(f"the worker for {key} exited (its traceback is above)") from None
        per_round = {k: [] for k in makers}
        for _ in range(rounds):
            for key, (conn, _) in workers.items():
                conn.send(iters)
                per_round[key].append(conn.recv())
        return per_round
    finally:
        for conn, proc in workers.values():
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=30)


def machine(threads: int | None = None) -> dict:
    """The CPU these numbers came from (model, the flags that choose kernels, cores) and the library versions:
    attnseg.deploy.backends.cpu.record. Numbers compare only within one machine."""
    from attnseg.deploy.backends.cpu import record

    return record(threads)

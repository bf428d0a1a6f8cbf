"""The Ray engine: the same jobs as on one machine (predict, eval, robustness, serve) on a Ray cluster.

Ray is an optional extra (`pip install 'attnseg[ray]'`) imported only here, when `--engine ray` is given.
A job is a Ray Data pipeline over small rows (an image path, a dataset index): rows are read in Ray tasks and
handed in batches to a pool of actors, each of which builds its model once (`run_pool`); Ray restarts an actor
whose process dies and runs its unfinished batch again. The work an actor does is a plain function built by
a picklable `setup()` callable, so this module knows nothing of models or files.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

INSTALL_HINT = "--engine ray needs Ray: pip install 'attnseg[ray]'"


class RayUnavailable(ImportError):
    """Ray is not installed; the message says how to install it."""


class RayJobError(RuntimeError):
    """A job failed in a way Ray does not retry (an actor that cannot build its model, say); the message is the
    original error's last line, not Ray's remote traceback."""


def require_ray():
    """The `ray` module, or RayUnavailable with the one-line install hint."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data ships in the ray[data] extra
    except ImportError as e:
        raise RayUnavailable(f"{INSTALL_HINT} ({e.name} missing)") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None, timeout_s: float = 30.0, say=None) -> float:
    """Join the cluster at `address` ('auto': the one `ray start` began on this machine; 'ray://HOST:10001' or
    'HOST:PORT': a remote one), or start a local instance (with `num_cpus`, default all) when None. Returns the
    seconds it took. An address where nothing answers within `timeout_s` is a ConnectionError (Ray itself
    retries for ever). Ray's own progress bars and INFO logs are turned off: the job prints its own progress and
    summary. say: a callable given one line when the wait for `address` begins."""
    ray = require_ray()
    t0 = time.perf_counter()
    _record_sigint()  # a Ctrl-C while Ray starts is swallowed by ray.init otherwise
    if address and address != "auto" and not ray.is_initialized():
        if say:
            say(f"Ray: waiting up to {timeout_s:g} s for a cluster at {address}")
        _wait_for_answer(address, timeout_s)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("RAY_gcs_server_request_timeout_seconds", str(max(1, int(timeout_s))))
        kw = {"num_cpus": num_cpus} if address is None and num_cpus else {}
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, **kw)
        except ConnectionError as e:
            raise ConnectionError(f"--address {address}: no Ray cluster answered ({str(e).splitlines()[0]}); "
                                  "start one with `ray start --head` or leave --address out for a local one") from None
    _record_sigint()  # again: ray.init may have put its own handler in place
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.serve", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return time.perf_counter() - t0


def _wait_for_answer(address: str, timeout_s: float) -> None:
    """Wait until something accepts a TCP connection at `address` (HOST:PORT, with or without ray://), trying
    every half second; ConnectionError, one line, when nothing has within `timeout_s`. Ctrl-C stops the wait at
    once (KeyboardInterrupt), and so does SIGTERM (Python's default action: the process ends)."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConnectionError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConnectionError(f"--address {address}: no Ray cluster answered within {timeout_s:g} s ({last}); "
                                  "start one with `ray start --head`, check the address, or raise --connect-timeout")
        try:
            with socket.create_connection((host, int(port)), timeout=min(left, 5.0)):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))


def cluster_cpus() -> int:
    ray = require_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@dataclass
class PoolReport:
    """What a pool run did: rows returned, and the actor processes that died and were replaced."""
    rows: int = 0
    seconds: float = 0.0
    restarts: set = field(default_factory=set)  # (actor id, pid) of each restarted actor process
    interrupted: bool = False


class _Worker:
    """One Ray actor: `setup()` builds the work function once (a model load); each batch is a dict of columns,
    turned into rows for the function and back. Every returned row names the actor and process it ran in and
    whether this process replaced one that died (Ray reconstructs the actor and retries its batch)."""

    def __init__(self, setup, threads: int | None):
        import ray
        import torch

        if threads:
            torch.set_num_threads(threads)
        ctx = ray.get_runtime_context()
        self.actor, self.pid = ctx.get_actor_id(), os.getpid()
        self.restarted = bool(ctx.was_current_actor_reconstructed)
        self.work = setup()

    def __call__(self, batch: dict) -> dict:
        keys = list(batch)
        n = len(batch[keys[0]]) if keys else 0
        rows = self.work([{k: batch[k][i] for k in keys} for i in range(n)])
        cols: dict = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
        cols["actor"] = [self.actor] * len(rows)
        cols["pid"] = [self.pid] * len(rows)
        cols["restarted"] = [self.restarted] * len(rows)
        return {k: _column(v) for k, v in cols.items()}


def run_pool(items: list[dict], setup, workers: int, threads: int | None = None, gpus: float = 0.0,
             batch_size: int = 4, read=None, on_row=None) -> PoolReport:
    """Stream `items` through `read` (a Ray task per row; None: rows go straight on) and a pool of `workers`
    actors built by `setup`, `batch_size` rows at a time; `on_row(row)` is called in this process for every
    finished row, in completion order. A KeyboardInterrupt stops the job (report.interrupted)."""
    ray = require_ray()
    report = PoolReport()
    if not items:
        return report
    if _STOPPED:
        report.interrupted = True
        return report
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 8 * workers)))
    if read is not None:  # reading reserves no core: the actors reserve them all (a task that waited for one
        # would never run), and decoding runs beside them, 2 tasks per actor at most
        ds = ds.map(read, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=2 * workers))
    ds = ds.map_batches(_Worker, fn_constructor_args=(setup, threads), batch_size=batch_size,
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads or 1,
                        num_gpus=gpus or None, batch_format="numpy")
    t0 = time.perf_counter()
    try:
        for row in ds.iter_rows():
            if _STOPPED:
                break
            report.rows += 1
            if row.get("restarted"):
                report.restarts.add((row["actor"], int(row["pid"])))
            if on_row is not None:
                on_row(row)
    except KeyboardInterrupt:
        _STOPPED.append("KeyboardInterrupt")
    except ray.exceptions.RayError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # the remote traceback ends with the error
        raise RayJobError(f"--engine ray: {lines[-1] if lines else type(e).__name__}") from None
    report.interrupted = bool(_STOPPED)
    report.seconds = time.perf_counter() - t0
    return report


def _column(values: list):
    """A batch column for Ray Data: arrays of one shape stacked into one tensor, anything else an object array."""
    import numpy as np

    if values and isinstance(values[0], np.ndarray) and len({a.shape for a in values}) == 1:
        return np.stack(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


_STOPPED: list = []  # the SIGINTs this process received since `connect` (see _record_sigint)


def _record_sigint() -> None:
    """Ctrl-C (SIGINT) from `connect` on: recorded here before anything else sees it, because Ray may take the
    KeyboardInterrupt it raises as the end of a stream (or swallow it while it starts), and the job must
    still stop and say so. The handler still raises KeyboardInterrupt, as Python's does."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigint(signum, frame):
        _STOPPED.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

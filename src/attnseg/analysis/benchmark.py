"""Latency / throughput / peak-memory measurement for any model (`attnseg benchmark`)."""
from __future__ import annotations

import resource
import statistics
import time

import torch

from ..io import first_line


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_fn(fn, warmup: int = 3, iters: int = 10, sync=None) -> list[float]:
    """Wall-clock seconds of each of `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t)
    return out


def summarize(times: list[float], batch: int) -> dict:
    s = sorted(times)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    med = statistics.median(s)
    return {"median_ms": 1000 * med, "p90_ms": 1000 * p90, "images_per_s": batch / med, "runs": len(s)}


def eager_dtype(dtype: str) -> torch.dtype:
    """The torch dtype PyTorch runs a model at for `dtype`; ValueError naming the graph runtimes for the others."""
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    if dt is None:
        raise ValueError(f"--dtype {dtype}: PyTorch runs fp32, bf16 or fp16 (CUDA); {dtype} runs in a graph runtime "
                         "(--backend onnx or openvino)")
    return dt


def benchmark_model(model, size: tuple[int, int], batch: int = 1, dtype: str = "fp32", backend: str = "eager",
                    device: str = "cpu", warmup: int = 3, iters: int = 10, model_kwargs: dict | None = None) -> dict:
    dt = eager_dtype(dtype)
    dev = torch.device(device)
    if dt is torch.float16 and dev.type == "cpu":
        raise ValueError("fp16 inference is for CUDA; on CPU use --dtype bf16")
    model = model.eval().to(dev)
    x = torch.randn(batch, 3, *size, device=dev)
    kw = model_kwargs or {}
    fn_model = model
    if backend == "compile":
        fn_model = torch.compile(model)
    elif backend != "eager":
        raise ValueError(f"backend must be eager, compile or onnx, got {backend!r}")

    def run():
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dt, enabled=dt is not torch.float32):
            fn_model(x, **kw)

    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        times = time_fn(run, warmup, iters, sync)
    except RuntimeError as e:  # an input too small for the model's kernels, or more memory than the machine has
        raise ValueError(f"an input of {size[0]}x{size[1]}: the model cannot run on it ({first_line(e)}); use a "
                         "larger --size, or a smaller one if it ran out of memory") from None
    res = summarize(times, batch)
    res["peak_mem_mb"] = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else peak_rss_mb()
    res["peak_mem_kind"] = "cuda max allocated" if dev.type == "cuda" else "process peak RSS"
    return res

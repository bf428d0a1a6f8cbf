"""Measured fp32 matmul peak of this machine, and the GFLOP/s attnseg models achieve against it.

Peak: best of several large square fp32 matmuls (2 * n^3 FLOPs each). Achieved: the model's
multiply-accumulates as executed (`count_flops(..., paper=False)`, x2 for FLOPs) divided by its
median inference latency.
Usage: python benchmarks/matmul_peak.py [--threads 2] [--models segformer-b0,segformer-b2,edaformer-t]
"""
from __future__ import annotations

import argparse
import time

import torch

import attnseg
from attnseg.tools.benchmark import benchmark_model
from attnseg.tools.flops import count_flops


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="segformer-b0,segformer-b2,edaformer-t")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = max(matmul_peak(n) for n in (1024, 2048, 3072))
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s ({args.threads} threads)")
    print(f"{'model':<14} {'GMACs run':>9} {'median ms':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for name in args.models.split(","):
        m = attnseg.create_model(name, num_classes=150).eval()
        macs = count_flops(m, (args.size, args.size), paper=False)["gmacs"]
        r = benchmark_model(m, (args.size, args.size), warmup=2, iters=args.iters)
        gflops = 2 * macs / (r["median_ms"] / 1000)
        print(f"{name:<14} {macs:>9.2f} {r['median_ms']:>10.1f} {gflops:>8.1f} {100 * gflops / peak:>7.1f}%")


if __name__ == "__main__":
    main()

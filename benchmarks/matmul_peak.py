"""Measured matmul peaks of this machine (fp32, bf16, int8), and the GFLOP/s attnseg models achieve.

Peaks: best of several large square matmuls (2 * n^3 operations each) in fp32 (MKL), bf16 (oneDNN on
AVX512-BF16 / AMX where present) and int8 x int8 -> int32 (`torch._int_mm`, oneDNN on AVX512-VNNI) and,
when installed, onnxruntime's MatMulInteger (u8 x s8, the kernel its int8 QDQ graphs use).
Achieved: the model's multiply-accumulates as executed (`count_flops(..., paper=False)`, x2 for FLOPs)
divided by its median fp32 inference latency (benchmarks/precision.py does bf16 and int8).
Usage: python benchmarks/matmul_peak.py [--threads 2] [--models segformer-b0,segformer-b2,edaformer-t]
"""
from __future__ import annotations

import argparse
import time

import torch

import attnseg
from attnseg.analysis.benchmark import benchmark_model
from attnseg.analysis.flops import count_flops


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s (GOP/s for int8) of an n x n x n matmul in `dtype` (float32, bfloat16 or int8)."""
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        return 2 * n ** 3 / _best(lambda: torch._int_mm(a, b), reps) / 1e9
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / _best(lambda: a @ b, reps) / 1e9


def ort_int8_peak(n: int = 2048, reps: int = 5, threads: int = 2) -> float | None:
    """GOP/s of onnxruntime's MatMulInteger (uint8 x int8 -> int32), or None without onnxruntime."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    del onnx
    return 2 * n ** 3 / _best(lambda: s.run(None, feeds), reps) / 1e9


def kernels_missing(machine=None) -> dict:
    """{peak: why it is not measured} for the peaks this CPU has no kernels for: emulated bf16 or int8 matmuls run
    orders of magnitude below the others (on an AVX2-only CPU the bf16 and torch int8 peaks did not finish in 17
    minutes), and a peak is what the CPU's kernels reach."""
    from attnseg.deploy.backends.cpu import this_machine

    m = machine or this_machine()
    out = {}
    if not m.bf16:
        out["bf16"] = "no bf16 kernels (AVX512-BF16 or AMX)"
    if not {"avx512_vnni", "amx_int8"} & set(m.flags):
        out["int8_torch"] = "no int8 kernels for torch._int_mm (AVX512-VNNI or AMX)"
    return out


def peaks(threads: int = 2, machine=None) -> dict:
    """{"fp32", "bf16", "int8_torch", "int8_ort"}: the best over a few sizes, in G(FL)OP/s; None for a peak this
    CPU has no kernels for (`kernels_missing`, said in one line) or without onnxruntime."""
    torch.set_num_threads(threads)
    missing = kernels_missing(machine)
    for key, why in missing.items():
        print(f"{key} peak not measured: {why}", flush=True)
    out = {"fp32": max(matmul_peak(n) for n in (1024, 2048, 3072)),
           "bf16": None if "bf16" in missing else max(matmul_peak(n, dtype=torch.bfloat16) for n in (1024, 2048, 3072)),
           "int8_torch": None if "int8_torch" in missing else
           max(matmul_peak(n, dtype=torch.int8) for n in (1024, 2048, 3072))}
    ort_peak = [ort_int8_peak(n, threads=threads) for n in (1024, 2048)]
    out["int8_ort"] = max(ort_peak) if None not in ort_peak else None
    return out


def _num(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="segformer-b0,segformer-b2,edaformer-t")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pk = peaks(args.threads)
    peak = pk["fp32"]
    print(f"matmul peaks ({args.threads} threads): fp32 {pk['fp32']:.1f} GFLOP/s, bf16 {_num(pk['bf16'])} GFLOP/s, "
          f"int8 {_num(pk['int8_torch'])} GOP/s (torch._int_mm), {_num(pk['int8_ort'])} GOP/s (onnxruntime "
          "MatMulInteger)")
    print(f"{'model':<14} {'GMACs run':>9} {'median ms':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for name in args.models.split(","):
        m = attnseg.create_model(name, num_classes=150).eval()
        macs = count_flops(m, (args.size, args.size), paper=False)["gmacs"]
        r = benchmark_model(m, (args.size, args.size), warmup=2, iters=args.iters)
        gflops = 2 * macs / (r["median_ms"] / 1000)
        print(f"{name:<14} {macs:>9.2f} {r['median_ms']:>10.1f} {gflops:>8.1f} {100 * gflops / peak:>7.1f}%")


if __name__ == "__main__":
    main()

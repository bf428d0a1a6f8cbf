"""Where the time goes in OpenVINO: per-operation execution times from the CPU plugin's performance counters,
summed by layer type and by the kernel that ran (e.g. brgemm_avx512_amx / jit_avx512_bf16), for one model at
one size and precision.

    python benchmarks/ov_profile.py --model segformer-b0 --size 512x512 --dtype bf16 --threads 2 \\
        --json results/precision/profile_openvino_b0_bf16.json

Each forward pass is timed; counters are read after `--iters` passes following `--warmup` untimed ones, and
their sum is compared with the measured latency (the rest is the plugin's own overhead between nodes).
Models without trained weights run with seeded random weights and 150 classes (the time does not depend on
the weights). An int8 IR (`attnseg export --format openvino --quantize int8`) is passed as --model m.xml.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

import torch


def load(name: str, dtype: str, threads: int):
    """The model compiled with the performance counters on."""
    import attnseg
    from attnseg.deploy.backends.openvino import OpenVinoModel

    if name.endswith(".xml"):
        return OpenVinoModel(name, dtype, threads, profile=True)
    if name in attnseg.list_pretrained() or Path(name).exists():
        model = attnseg.load_model(name)
    else:
        torch.manual_seed(0)
        model = attnseg.create_model(name, num_classes=150)
    return OpenVinoModel(model.eval(), dtype, threads, profile=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="segformer-b0")
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    req = load(args.model, args.dtype, args.threads).compiled.create_infer_request()
    x = torch.randn(1, 3, h, w).numpy()
    feeds = {"images": x}
    for _ in range(args.warmup):
        req.infer(feeds)
    by_type: dict[tuple[str, str], float] = collections.defaultdict(float)
    lat = []
    for _ in range(args.iters):
        t = time.perf_counter()
        req.infer(feeds)
        lat.append(1000 * (time.perf_counter() - t))
        for p in req.profiling_info:
            if p.status == p.Status.EXECUTED:
                by_type[(p.node_type, p.exec_type)] += p.real_time.total_seconds() * 1000 / args.iters
    total = sum(by_type.values())
    rows = [{"layer": k[0], "kernel": k[1], "ms": round(v, 3), "share": round(v / total, 4)}
            for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])]
    ms = statistics.median(lat)
    print(f"{args.model} {args.size} OpenVINO {args.dtype}, {args.threads} threads: median {ms:.1f} ms per image, "
          f"counters sum to {total:.1f} ms")
    print(f"{'layer':<24} {'kernel':<34} {'ms':>8} {'share':>7}")
    for r in rows[: args.top]:
        print(f"{r['layer']:<24} {r['kernel']:<34} {r['ms']:8.2f} {100 * r['share']:6.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "size": args.size, "dtype": args.dtype,
                                               "threads": args.threads, "median_ms": ms, "counters_ms": total,
                                               "by_layer_and_kernel": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

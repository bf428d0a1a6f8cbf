"""ISR on EDAFormer-T at 1024x2048: GFLOPs and CPU latency, baseline vs ISR, interleaved in one run.

Usage: python benchmarks/isr_latency.py [--isr 2,2,1,1:2,2,2] [--size 1024x2048] [--threads 2] [--rounds 5]
Prints the FLOPs cut and the latency cut (median of per-round ratios, with min..max).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import attnseg
from attnseg.isr import IsrSetting
from attnseg.analysis.flops import count_flops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="edaformer-t")
    ap.add_argument("--isr", default="2,2,1,1:2,2,2")
    ap.add_argument("--size", default="1024x2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    m = attnseg.create_model(args.model, num_classes=19).eval()
    isr = IsrSetting.parse(args.isr).kwargs()
    base_f = count_flops(m, (h, w))["gmacs"]
    m.set_isr(**isr)
    isr_f = count_flops(m, (h, w))["gmacs"]
    x = torch.randn(1, 3, h, w)

    def run(setting):
        m.set_isr(**setting)
        t = time.perf_counter()
        with torch.inference_mode():
            m(x)
        return time.perf_counter() - t

    off = {"encoder": None, "decoder": None}
    run(off), run(isr)  # warm-up
    base_t, isr_t = [], []
    for _ in range(args.rounds):  # interleaved: A B A B ...
        base_t.append(run(off))
        isr_t.append(run(isr))
    ratios = [1 - b / a for a, b in zip(base_t, isr_t)]
    print(f"{args.model} {h}x{w}, {args.threads} threads, ISR {args.isr}")
    print(f"  GFLOPs: {base_f:.1f} -> {isr_f:.1f} ({100 * (1 - isr_f / base_f):.1f}% fewer)")
    print(f"  latency: {1000 * statistics.median(base_t):.0f} ms -> {1000 * statistics.median(isr_t):.0f} ms "
          f"({100 * statistics.median(ratios):.1f}% faster; per-round {100 * min(ratios):.1f}..{100 * max(ratios):.1f}%)")


if __name__ == "__main__":
    main()

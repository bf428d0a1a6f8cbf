"""Sliding-window inference at large sizes: latency and peak memory (RSS) on CPU.

Each configuration runs in a fresh subprocess so ru_maxrss is that run's own peak. Memory should be
the model + one batch of windows + the (K, H, W) logits buffer: it must not scale with the image
beyond that buffer.
Usage: python benchmarks/slide_memory.py [--model segformer-b0] [--classes 19] [--threads 2] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
import attnseg
from attnseg.inference.modes import InferenceConfig, infer
name, k, h, w, crop, stride, wb, threads = sys.argv[1:9]
torch.set_num_threads(int(threads))
m = attnseg.create_model(name, num_classes=int(k)).eval()
x = torch.randn(1, 3, int(h), int(w))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = InferenceConfig("slide", crop=int(crop), stride=int(stride), window_batch=int(wb))
with torch.inference_mode():
    t = time.perf_counter()
    out = infer(m, x, cfg)
    dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": f"{h}x{w}", "latency_s": round(dt, 2), "peak_rss_mb": round(peak / 1024),
                  "before_inference_mb": round(base / 1024), "logits_buffer_mb": round(out.numel() * 4 / 2**20)}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="segformer-b0")
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--crop", type=int, default=1024)
    ap.add_argument("--stride", type=int, default=768)
    ap.add_argument("--window-batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the settings and rows here")
    args = ap.parse_args()
    print(f"{args.model}, slide {args.crop}x{args.crop} stride {args.stride}, {args.window_batch} windows/batch, "
          f"{args.threads} threads")
    rows = []
    for h, w in [(1024, 1024), (1024, 2048), (2048, 4096)]:
        r = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.classes), str(h), str(w),
                            str(args.crop), str(args.stride), str(args.window_batch), str(args.threads)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "classes": args.classes, "crop": args.crop, "stride": args.stride,
                       "window_batch": args.window_batch, "threads": args.threads, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

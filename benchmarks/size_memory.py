"""Memory of a model run on a stream of image sizes it has not seen: RSS after each size, per backend, with the
library's bounds on and off, each setting in its own process, one run. The bounds: the process's heap ceiling
(`attnseg.memory`: freed heap given back after a run once the resident set is 512 MB above the first run's),
and for OpenVINO a compiled graph serving at most 16 shapes before it is compiled afresh. onnxruntime's dynamic
session has no bound of its own.

    python benchmarks/size_memory.py --sizes 60 --json results/serve/size_memory.json

Each process loads the model, runs one image at its working size (warm-up), then `Segmenter.predict` on
`--sizes` images whose working sizes all differ (short side 360, the long side 480 + 8k px, landscape and
portrait in turn), and reports RSS after the warm-up and every tenth size, the seconds the stream took and how
many times heap was given back. "off" sets no heap ceiling and lets a graph serve any number of shapes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
import numpy as np, torch
import attnseg
from attnseg import memory
from attnseg.deploy.backends import openvino as ovb

model_name, backend, bounded, sizes = sys.argv[1], sys.argv[2], sys.argv[3] == "on", int(sys.argv[4])
torch.set_num_threads(2)
if not bounded:
    memory.set_ceiling(mb=1e9)
if backend == "openvino":
    model = ovb.OpenVinoModel(attnseg.load_model(model_name), "fp32", threads=2,
                              max_shapes=ovb.MAX_SHAPES if bounded else 10**9)
else:
    model = attnseg.open(model_name, backend=backend, precision="fp32", threads=2)
seg = attnseg.Segmenter(model)

def rss():
    return memory.resident_bytes() / 2**20

rng = np.random.default_rng(0)
seg.predict(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8))
out = {"warm": rss(), "after": []}
t0 = time.perf_counter()
for k in range(sizes):
    long = 480 + 8 * (k + 1)
    seg.predict(rng.integers(0, 255, (360, long, 3) if k % 2 == 0 else (long, 360, 3), dtype=np.uint8))
    if (k + 1) % 10 == 0:
        out["after"].append([k + 1, rss()])
out["seconds"] = time.perf_counter() - t0
out["trims"] = memory.trims()
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sanet-effnet-lite0-camvid")
    ap.add_argument("--sizes", type=int, default=60)
    ap.add_argument("--backends", default="eager,onnx,openvino")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from timing import machine

    rows = []
    for backend in args.backends.split(","):
        for bounded in ("off", "on"):
            r = subprocess.run([sys.executable, "-c", CHILD, args.model, backend, bounded, str(args.sizes)],
                               capture_output=True, text=True, cwd=ROOT, check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append({"backend": backend, "bounds": bounded, **res})
            trace = ", ".join(f"{n}: {v:.0f}" for n, v in res["after"])
            print(f"{backend:<9} bounds {bounded:<3} RSS warm {res['warm']:.0f} MB; after N new sizes: {trace} MB; "
                  f"{res['seconds']:.1f} s, heap given back {res['trims']} times", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

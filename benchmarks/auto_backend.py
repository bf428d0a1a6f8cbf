"""`--backend auto` against every eligible candidate on this machine, and the first run against the second.

1. Every candidate `attnseg.open` may choose for a model (deploy.tune.candidates), and those it leaves untimed
   because another is known to beat them (eager PyTorch, onnxruntime's unpinned fp32 graph, OpenVINO fp32 beside
   bf16), is timed in a process of its own, interleaved over rounds (benchmarks/timing.py), at the model's working
   size; the median over rounds.
2. `auto`'s choice is made `--choices` times from an empty cache (a fresh process each, as a first run makes
   it); each choice is scored by the interleaved speed of what it chose over the fastest candidate's.
3. `attnseg predict` of one photo with an empty cache folder, then again with the cache it left: wall times.
4. `attnseg serve` with its default models, from launch until GET /readyz answers 200 (every model loaded and
   run once): `--backend eager`, then `auto` with an empty cache folder, then `auto` again with the cache it left.
Results record the CPU model and flags, threads and library versions.

    .venv/bin/python benchmarks/auto_backend.py --json results/runtime/auto_backend_$(CLASS).json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from benchmarks.timing import machine, time_interleaved  # noqa: E402

MODELS = {"allmlp-effnet-lite2-camvid": (540, 720), "sanet-effnet-lite0-camvid": (360, 480)}
PHOTO = ROOT / "examples" / "camvid_test_0001TP_008550.png"


def make(name: str, cand: str, size: tuple[int, int], threads: int):
    """In the worker: the candidate prepared as attnseg.open prepares it, called as auto times it."""
    from attnseg.deploy import runtime
    from attnseg.deploy.backends import BACKENDS
    from attnseg.deploy.tune import Candidate

    c = Candidate.parse(cand)
    src = runtime.resolve(name)
    model = BACKENDS[c.backend].prepare(src, c.precision, threads, size if c.fixed else None)
    kw = runtime._timing_kwargs(src)
    import torch

    autocast = c.backend == "eager" and c.precision == "bf16"

    def call(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(x, **kw)

    return call


def auto_choice(name: str, size, threads: int) -> tuple[str, float]:
    """auto's choice from an empty cache in a fresh process, and the seconds the open took."""
    with tempfile.TemporaryDirectory() as cache:
        code = ("import time, attnseg; t = time.perf_counter(); "
                f"m = attnseg.open({name!r}, threads={threads}, size={tuple(size)!r}, progress=None); "
                "print(time.perf_counter() - t)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "ATTNSEG_CACHE": cache})
        entry = next(iter(json.loads((Path(cache) / "choices.json").read_text()).values()))
        return entry["choice"], float(out.stdout.strip().splitlines()[-1])


def first_and_second_run(threads: int) -> dict:
    """Wall seconds of `attnseg predict PHOTO` with an empty cache folder, then with the cache it left."""
    exe = Path(sys.executable).parent / "attnseg"
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run([str(exe), "predict", str(PHOTO), "--out", out, "--threads", str(threads)], check=True,
                           capture_output=True, env={**os.environ, "ATTNSEG_CACHE": cache})
            times.append(time.perf_counter() - t0)
    return {"first_s": round(times[0], 2), "second_s": round(times[1], 2), "ratio": round(times[0] / times[1], 2)}


def serve_start(threads: int, timeout: float = 600) -> dict:
    """Seconds from launching `attnseg serve` (its default models) until /readyz answers 200: eager, auto from an
    empty cache, auto with the cache that left."""
    import socket
    import urllib.error
    import urllib.request

    exe = Path(sys.executable).parent / "attnseg"
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label, backend in (("eager_s", "eager"), ("auto_first_s", "auto"), ("auto_second_s", "auto")):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--backend", backend, "--threads",
                                     str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "ATTNSEG_CACHE": cache})
            try:
                while True:
                    if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                        raise RuntimeError(f"attnseg serve --backend {backend} did not become ready")
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                            if r.status == 200:
                                break
                    except (urllib.error.URLError, OSError):
                        pass
                    time.sleep(0.1)
                out[label] = round(time.perf_counter() - t0, 2)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    out["auto_first_over_eager"] = round(out["auto_first_s"] / out["eager_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--choices", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--parts", default="models,first_run,serve_start",
                    help="which measurements (comma-separated); others are kept from an existing --json file")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    from attnseg.deploy import runtime, tune
    from attnseg.deploy.backends.cpu import this_machine

    old = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    if parts != {"models", "first_run", "serve_start"} and old.get("machine", {}).get("flags") != \
            machine(args.threads)["flags"]:
        raise SystemExit(f"{args.json} was measured on another CPU: measure every part (--parts) here")
    result = {**old, "machine": machine(args.threads)}
    if "models" in parts:
        result["models"] = {}
    for name in args.models if "models" in parts else []:
        size = MODELS.get(name, (360, 480))
        cands, skipped = tune.candidates(runtime.resolve(name), this_machine())
        # the candidates auto leaves untimed because another is known to beat them are timed here too
        beaten = [k for k, why in skipped.items() if why in tune.BEATEN]
        makers = {k: (make, (name, k, size, args.threads)) for k in [*map(str, cands), *beaten]}
        ms = time_interleaved(makers, (1, 3, *size), args.threads, args.rounds, args.iters)
        ips = {k: round(1000 / statistics.median(v), 2) for k, v in ms.items()}
        best = max(ips, key=ips.get)
        choices = [auto_choice(name, size, args.threads) for _ in range(args.choices)]
        row = {"size": list(size), "images_per_s": ips, "fastest": best, "skipped": skipped, "untimed_by_auto": beaten,
               "auto": [{"choice": c, "open_s": round(s, 2), "of_fastest": round(ips[c] / ips[best], 3)}
                        for c, s in choices]}
        result["models"][name] = row
        print(name, json.dumps(row), flush=True)
    if "first_run" in parts:
        result["first_run"] = first_and_second_run(args.threads)
        print("first run", result["first_run"])
    if "serve_start" in parts:
        result["serve_start"] = serve_start(args.threads)
        print("serve start", result["serve_start"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`attnseg predict` on one process against `--engine ray` with 1 and 2 workers, in one run on this machine.

    python benchmarks/ray_predict.py --images 233 --json results/speed/ray_predict.json

Every run segments the same CamVid test images with the same model and backend into a fresh folder and is
timed end to end (model loading included). Ray's start-up (a local instance) is timed on its own, before the
Ray runs. The steady rate of a run is (images - 1) / (last - first output written), from the overlays'
modification times: what a worker sustains once its model is loaded. The 1-million-image estimate is the
arithmetic on that rate, stated with its assumptions in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def steady_rate(out: Path) -> float:
    times = sorted(p.stat().st_mtime for p in out.glob("*_overlay.jpg"))
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")


def timed(argv: list[str], out: Path) -> dict:
    from attnseg.cli import main

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    rc = main(argv + ["--out", str(out)])
    wall = time.perf_counter() - t0
    n = len(list(out.glob("*_overlay.jpg")))
    assert rc == 0 and n, f"{argv}: rc {rc}, {n} outputs"
    return {"images": n, "wall_s": round(wall, 2), "images_per_s": round(n / wall, 2),
            "steady_images_per_s": round(steady_rate(out), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=233, help="first N CamVid test images")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid" / "test"))
    ap.add_argument("--model", default=None, help="default: the shipped default model")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    images = [str(p) for p in sorted(Path(a.data).glob("*.png"))[: a.images]]
    common = images + ["--backend", a.backend] + (["--model", a.model] if a.model else [])
    tmp = Path(tempfile.mkdtemp(prefix="ray_predict_"))
    runs = {}
    runs["local"] = timed(["predict", *common, "--threads", str(a.cpus)], tmp / "local")
    print("local", runs["local"], flush=True)

    from attnseg.ray_engine import connect

    startup = connect(num_cpus=a.cpus)
    print(f"Ray start-up {startup:.2f} s", flush=True)
    for workers in (1, 2):
        threads = max(1, a.cpus // workers)
        key = f"ray_{workers}w_x{threads}t"
        runs[key] = timed(["predict", *common, "--engine", "ray", "--workers", str(workers), "--threads",
                           str(threads)], tmp / key)
        print(key, runs[key], flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    best = max((k for k in runs if k.startswith("ray_")), key=lambda k: runs[k]["steady_images_per_s"])
    per_cpu = runs[best]["steady_images_per_s"] / a.cpus
    estimate = {
        "assumptions": f"each worker has {a.cpus} CPU cores like this machine and sustains {a.cpus} x "
                       f"{per_cpu:.2f} images/s per core (the best Ray run's steady rate here, {best}); reading "
                       "and writing keep up (shared storage not the bottleneck); start-up and model loading are "
                       "paid once",
        "per_worker_images_per_s": round(per_cpu * a.cpus, 2),
        "hours_for_1M": {str(n): round(1e6 / (n * per_cpu * a.cpus) / 3600, 2) for n in (1, 10, 100)},
    }
    from attnseg.pretrained import default_model

    record = {"model": a.model or default_model(), "backend": a.backend, "cpus": a.cpus, "images": len(images),
              "machine": platform.processor() or platform.machine(), "ray_startup_s": round(startup, 2),
              "runs": runs, "estimate_1M": estimate}
    print(json.dumps(record, indent=2))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

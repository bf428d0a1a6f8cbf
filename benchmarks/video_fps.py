"""Frames/s of `attnseg predict clip.mp4` end to end (decode, inference, upsampling, overlay, encode) for the
shipped SANet and the default model on `--backend auto`, against the images/s of the same model, backend and
precision alone at its working size (`attnseg benchmark --backend auto`), interleaved in rounds.

    python benchmarks/video_fps.py --rounds 3 --threads 2,1 --json results/speed/video_fps.json

`--threads`: the model's threads in both (the video's decoder, writer and encoder threads come on top). With as
many model threads as cores, the other stages share the model's cores; with one fewer, they have a core of
their own.

The clip is the 233 CamVid test images as a 480x360, 30 frames/s H.264 video (scripts/camvid_clip.py). Each run
is a process of its own sharing one cache folder, so auto's choice is made once per model and used by both; the
frames/s is the one `predict` prints. The CamVid test mIoU is the one recorded in results/precision/ for the
backend and precision auto chose.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.timing import machine  # noqa: E402

MODELS = {"sanet-effnet-lite0-camvid": ((360, 480), ""), "allmlp-effnet-lite2-camvid": ((540, 720), "_s15")}
SUFFIX = {"eager fp32": "fp32", "eager bf16": "bf16", "onnx fp32": "onnx_fp32", "onnx int8": "onnx_int8",
          "openvino fp32": "ov_fp32", "openvino bf16": "ov_bf16", "openvino int8": "ov_int8",
          "openvino int8-bf16": "ov_int8_bf16"}
LINE = re.compile(r"\((\d+) frames of (\d+)x(\d+) in ([\d.]+) s: ([\d.]+) frames/s end to end\)")
CHOICE = re.compile(r" runs on (eager|onnx|openvino) ([\w-]+)( \(fixed size\))?: ")


def call(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-1000:]}{r.stderr[-2000:]}")
    return r


def video(clip: Path, model: str, out: Path, env: dict, threads: int) -> tuple[float, str]:
    r = call([sys.executable, "-m", "attnseg.cli", "predict", str(clip), "--model", model, "--out", str(out), "-v",
              "--overwrite", "--threads", str(threads)], env)
    return float(LINE.search(r.stdout)[5]), " ".join(CHOICE.search(r.stderr).group(1, 2))


def alone(model: str, size, env: dict, threads: int) -> float:
    r = call([sys.executable, "-m", "attnseg.cli", "benchmark", "--model", model, "--backend", "auto", "--size",
              f"{size[0]}x{size[1]}", "--warmup", "5", "--iters", "100", "--json", "--threads", str(threads)], env)
    return json.loads(r.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--threads", default=str(os.cpu_count()), help="model threads, comma-separated (default: cores)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="video_fps_"))
    try:
        run(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the clip, the outputs and the graph cache


def run(a: argparse.Namespace, tmp: Path) -> None:
    env = {**os.environ, "ATTNSEG_CACHE": str(tmp / "cache")}
    clip = tmp / "camvid_test.mp4"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "camvid_clip.py"), a.data, str(clip)], check=True)
    rows = [{"model": m, "size": list(size), "threads": int(t), "fps": [], "images_per_s": []}
            for t in a.threads.split(",") for m, (size, _) in MODELS.items()]
    for r in range(a.rounds):
        for row in rows:
            fps, chosen = video(clip, row["model"], tmp / "out", env, row["threads"])
            ips = alone(row["model"], row["size"], env, row["threads"])
            row["fps"].append(fps)
            row["images_per_s"].append(ips)
            row["auto"] = chosen
            row["precision"] = SUFFIX[chosen] + MODELS[row["model"]][1]
            print(f"round {r + 1}: {row['model']} ({chosen}, {row['threads']} threads): video {fps:.1f} frames/s, alone {ips:.1f} images/s",
                  flush=True)
    record = {"clip": "CamVid test, 233 frames, 480x360, 30 frames/s (scripts/camvid_clip.py)",
              "rounds": a.rounds, "machine": machine(), "rows": rows}
    print(json.dumps(record, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

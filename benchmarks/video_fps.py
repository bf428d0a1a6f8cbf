"""Frames/s of `attnseg predict clip.mp4` end to end (decode, inference, upsampling, overlay, encode) for the
shipped SANet and the default model in each backend, interleaved in rounds, on the CamVid test clip.

    python benchmarks/video_fps.py --rounds 2 --json results/speed/video_fps.json

The clip is the 233 CamVid test images as a 480x360, 30 frames/s H.264 video (scripts/camvid_clip.py). Each
run is `attnseg predict CLIP --model M --backend B [--dtype D] --out DIR` in a process of its own; its
frames/s is the one the command prints. The CamVid test mIoU of each setting is the one recorded in
results/precision/ for that model, backend and precision (`precision` names the file's suffix).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [  # model, backend, dtype, the results/precision/ suffix of its CamVid test mIoU
    ("sanet-effnet-lite0-camvid", "auto", None, "ov_bf16"),
    ("sanet-effnet-lite0-camvid", "openvino", "fp32", "ov_fp32"),
    ("sanet-effnet-lite0-camvid", "onnx", None, "onnx_fp32"),
    ("sanet-effnet-lite0-camvid", "eager", None, "fp32"),
    ("allmlp-effnet-lite2-camvid", "auto", None, "ov_bf16_s15"),
    ("allmlp-effnet-lite2-camvid", "openvino", "fp32", "ov_fp32_s15"),
    ("allmlp-effnet-lite2-camvid", "onnx", None, "onnx_fp32_s15"),
]
LINE = re.compile(r"\((\d+) frames of (\d+)x(\d+) in ([\d.]+) s: ([\d.]+) frames/s end to end\)")


def run(clip: Path, model: str, backend: str, dtype: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "attnseg.cli", "predict", str(clip), "--model", model, "--backend", backend,
           "--out", str(out)] + (["--dtype", dtype] if dtype else [])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    m = LINE.search(r.stdout)
    if r.returncode or not m:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-1000:]}{r.stderr[-2000:]}")
    return {"frames": int(m[1]), "seconds": float(m[4]), "fps": float(m[5])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="video_fps_"))
    clip = tmp / "camvid_test.mp4"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "camvid_clip.py"), a.data, str(clip)], check=True)
    rows = [{"model": m, "backend": b, "dtype": d, "precision": p, "fps": []} for m, b, d, p in SETTINGS]
    for r in range(a.rounds):
        for row in rows:
            got = run(clip, row["model"], row["backend"], row["dtype"], tmp / "out")
            row["fps"].append(got["fps"])
            row["frames"] = got["frames"]
            print(f"round {r + 1}: {row['model']} --backend {row['backend']} {row['dtype'] or ''}: "
                  f"{got['fps']:.1f} frames/s", flush=True)
    record = {"clip": "CamVid test, 233 frames, 480x360, 30 frames/s (scripts/camvid_clip.py)",
              "rounds": a.rounds, "rows": rows}
    print(json.dumps(record, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Write src/attnseg/pretrained/precision.json and speed.json: each shipped model's CamVid test mIoU per backend
and precision, read from the JSONs scripts/precision_accuracy.sh wrote in results/precision/ (the run at each
model's working size), and its images/s per backend and precision from benchmarks/precision.py's run of the
shipped models (results/precision/speed_shipped_*.json). `--backend auto` reads the first to choose the fastest
precision within 0.3 points of fp32; the model cards (`attnseg models --card`, the docs) show both.

    .venv/bin/python scripts/precision_record.py
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "precision"
COLUMNS = {"fp32": "eager-fp32", "bf16": "eager-bf16", "onnx_fp32": "onnx-fp32", "onnx_int8": "onnx-int8",
           "ov_fp32": "openvino-fp32", "ov_bf16": "openvino-bf16", "ov_int8": "openvino-int8",
           "ov_int8_bf16": "openvino-int8-bf16"}
# the run at each shipped model's working size (the Lite2 models work at 1.5x CamVid: the _s15 files)
SUFFIX = {"allmlp-effnet-lite2-camvid": "_s15", "lseg-effnet-lite2-camvid": "_s15"}


def machine() -> str:
    """The CPU the speeds were measured on (the record is written on the machine that timed them)."""
    import os

    try:
        name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def main() -> int:
    import sys

    sys.path.insert(0, str(ROOT / "src"))
    from attnseg.pretrained import PRETRAINED_DIR, list_pretrained

    record = {}
    for name in list_pretrained():
        row = {}
        for stem, key in COLUMNS.items():
            f = RESULTS / f"{name}_{stem}{SUFFIX.get(name, '')}.json"
            if f.is_file():
                row[key] = round(100 * json.loads(f.read_text())["mIoU"], 2)
        record[name] = row
        print(name, row)
    (PRETRAINED_DIR / "precision.json").write_text(json.dumps(record, indent=1) + "\n")
    speed = {}
    for f in sorted(RESULTS.glob("speed_shipped_*.json")):
        run = json.loads(f.read_text())
        for row in run["rows"]:
            if "images_per_s" in row and row["model"] in record:
                speed[row["model"]] = {"size": row["size"], "threads": run["threads"], "machine": machine(),
                                       "images_per_s": {COLUMNS[k]: round(v, 2) for k, v in row["images_per_s"].items()},
                                       "sources": [str(f.relative_to(ROOT))]}
    (PRETRAINED_DIR / "speed.json").write_text(json.dumps(speed, indent=1) + "\n")
    print(speed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write src/attnseg/pretrained/precision.json and speed.json: each shipped model's CamVid test mIoU per backend
and precision, read from the JSONs scripts/precision_accuracy.sh wrote in results/precision/ (the run at each
model's working size), and its images/s per backend and precision from benchmarks/precision.py's run of the
shipped models (results/precision/speed_shipped_*.json), per CPU class (benchmarks/auto_backend.py's runs add the
classes those do not cover). `--backend auto` reads the first to choose the fastest
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


# benchmarks/precision.py's runs of the shipped models (speed_shipped_*.json) predate results that record their
# CPU: they were timed on the 2-core AMD EPYC with AVX2, AVX512F, AVX512-VNNI and AVX512-BF16 (their OpenVINO bf16
# ran at 1.45-2.0x fp32, which only bf16 kernels give)
SHIPPED_RUNS_MACHINE = {"cpu": "AMD EPYC", "cores": 2, "flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"],
                        "cpu_class": "avx512-bf16"}


def describe(m: dict) -> str:
    return f"{m['cpu']} ({m['cores']} cores; {', '.join(m['flags'])})"


def speed_by_class(models) -> dict:
    """{model: {CPU class: {size, threads, machine, images_per_s, sources}}}: the shipped-model runs, and for a CPU
    class they do not cover, benchmarks/auto_backend.py's candidates (each run records its CPU)."""
    speed = {}
    for f in sorted(RESULTS.glob("speed_shipped_*.json")):
        run = json.loads(f.read_text())
        m = run.get("machine", SHIPPED_RUNS_MACHINE)
        for row in run["rows"]:
            if "images_per_s" in row and row["model"] in models:
                speed.setdefault(row["model"], {})[m["cpu_class"]] = {
                    "size": row["size"], "threads": run["threads"], "machine": describe(m),
                    "images_per_s": {COLUMNS[k]: round(v, 2) for k, v in row["images_per_s"].items()},
                    "sources": [str(f.relative_to(ROOT))]}
    for f in sorted((ROOT / "results" / "runtime").glob("auto_backend_*.json")):
        run = json.loads(f.read_text())
        m = run["machine"]
        for name, r in run.get("models", {}).items():
            if name in models and m["cpu_class"] not in speed.get(name, {}):
                ips = {k.removesuffix("-fixed"): v for k, v in sorted(r["images_per_s"].items(), key=lambda kv: kv[1])}
                speed.setdefault(name, {})[m["cpu_class"]] = {
                    "size": "x".join(map(str, r["size"])), "threads": m.get("threads"), "machine": describe(m),
                    "images_per_s": ips, "sources": [str(f.relative_to(ROOT))]}
    return speed


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
    speed = speed_by_class(record)
    (PRETRAINED_DIR / "speed.json").write_text(json.dumps(speed, indent=1) + "\n")
    print(speed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

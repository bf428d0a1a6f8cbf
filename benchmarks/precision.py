"""Precision and backend speed in one run: fp32 / bf16 eager PyTorch, fp32 / int8 onnxruntime and fp32 / bf16 /
int8 OpenVINO (`--variants` picks a subset, e.g. onnx_fp32,ov_fp32,ov_bf16,ov_int8).

For each model and input size the four variants are timed interleaved (round r runs fp32, bf16, onnx
fp32, onnx int8 one after the other, `--iters` forward passes each after an untimed one, median per
variant and round), so drift of this machine's speed hits all four alike; speed-ups are medians of
per-round ratios. Each variant runs in a process of its own, one at a time (benchmarks/timing.py). Achieved
throughput is the model's executed multiply-accumulates x 2 over the median latency, against the
machine's measured matmul peak of the same precision (benchmarks/matmul_peak.py).

int8 graphs are made as `attnseg export --quantize int8` makes them (static QDQ, per-channel weights,
calibrated on `--calib-images` images of `--calibrate`), with the fp32 op types the model's recorded
choice keeps (`attnseg.deploy.quantize.default_fp32_ops`), or pass ready files with --int8 NAME=PATH.
OpenVINO int8 graphs are made as `attnseg export --format openvino --quantize int8` makes them (NNCF on the
same images); `ov_int8` runs what NNCF left in floating point in fp32, `ov_int8_bf16` in bf16.

    python benchmarks/precision.py --threads 2 --json results/precision/speed.json
Models without trained weights (segformer-b0/b2, edaformer-t) run with seeded random weights, 150 classes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attnseg  # noqa: E402
from attnseg.deploy.backends.onnxruntime import OnnxModel  # noqa: E402
from attnseg.deploy.export import export_onnx  # noqa: E402
from attnseg.analysis.flops import count_flops  # noqa: E402
from matmul_peak import peaks  # noqa: E402
from timing import machine, time_interleaved  # noqa: E402

VARIANTS = ("fp32", "bf16", "onnx_fp32", "onnx_int8", "ov_fp32", "ov_bf16", "ov_int8", "ov_int8_bf16")


def load(name: str):
    if name in attnseg.list_pretrained() or Path(name).exists():
        return attnseg.load_model(name).eval()
    torch.manual_seed(0)
    return attnseg.create_model(name, num_classes=150).eval()


def int8_graph(model, name: str, out: Path, calibrate: str, n: int) -> Path:
    from attnseg.data import EvalTransform, build_dataset
    from attnseg.deploy.quantize import calibration_inputs, default_fp32_ops, quantize_int8

    ds_name, root, split = calibrate.split(":")
    calib = calibration_inputs(model, build_dataset(ds_name, root, split, EvalTransform()), n)
    return quantize_int8(model, out, calib, exclude_ops=default_fp32_ops(model))


def ov_int8_graph(model, out: Path, calibrate: str, n: int) -> Path:
    from attnseg.data import EvalTransform, build_dataset
    from attnseg.deploy.backends.openvino_int8 import quantize_openvino
    from attnseg.deploy.quantize import calibration_inputs

    ds_name, root, split = calibrate.split(":")
    calib = calibration_inputs(model, build_dataset(ds_name, root, split, EvalTransform()), n)
    return quantize_openvino(model, out, calib)


def agreement(model, int8_path: Path, spec: str, n: int | None, threads: int) -> dict:
    """Share of pixels whose int8 (onnxruntime) and bf16 (eager) argmax equals fp32 eager's, over the images
    of DATASET:ROOT:SPLIT run as `attnseg predict` runs them (the model's working size; 512 if unrecorded)."""
    import numpy as np

    from attnseg.data import EvalTransform, build_dataset
    from attnseg.deploy.quantize import spaced_indices

    ds_name, root, split = spec.split(":")
    ds = build_dataset(ds_name, root, split, EvalTransform())
    idx = spaced_indices(len(ds), n or None)
    seg = attnseg.Segmenter(model)
    others = {"onnx_int8": attnseg.Segmenter(OnnxModel(int8_path, threads)),
              "bf16": attnseg.Segmenter(model, dtype=torch.bfloat16)}
    same = dict.fromkeys(others, 0)
    total = 0
    for i in idx:
        rgb = np.ascontiguousarray(ds[i]["image"].permute(1, 2, 0).numpy())
        ref = seg.predict(rgb)
        total += ref.size
        for k, s in others.items():
            same[k] += int((s.predict(rgb) == ref).sum())
    return {"images": len(idx), **{k: v / total for k, v in same.items()}}


def make_runner(variant: str, name: str, path: str | None):
    """The call a timing worker times (runs in the worker process)."""
    if variant.startswith("onnx"):
        return OnnxModel(path, torch.get_num_threads())
    if variant.startswith("ov_"):
        from attnseg.deploy.backends.openvino import OpenVinoModel

        if variant.startswith("ov_int8"):
            return OpenVinoModel(path, "bf16" if variant.endswith("bf16") else "fp32", torch.get_num_threads())
        return OpenVinoModel(load(name), variant[3:], torch.get_num_threads())
    model = load(name)
    return model if variant == "fp32" else (lambda x: _bf16(model, x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="segformer-b0,segformer-b2,edaformer-t,sanet-effnet-lite0-camvid")
    ap.add_argument("--sizes", default="512x512,360x480")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--calibrate", default="camvid:../shared/data/camvid:train")
    ap.add_argument("--calib-images", type=int, default=16)
    ap.add_argument("--int8", action="append", default=[], metavar="NAME=PATH", help="a ready int8 graph")
    ap.add_argument("--agreement", default=None, metavar="DATASET:ROOT:SPLIT",
                    help="also the pixel agreement of int8 and bf16 argmax with fp32 on these images")
    ap.add_argument("--agreement-images", type=int, default=None, help="evenly spaced subset (default: all)")
    ap.add_argument("--no-timing", action="store_true", help="only the agreement (no timings)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    from attnseg.deploy.backends.cpu import this_machine

    if not this_machine().bf16:  # emulated bf16 is not a precision this CPU offers: every class runs what it has
        skipped = [v for v in variants if v.endswith("bf16")]
        variants = [v for v in variants if v not in skipped]
        if skipped:
            print(f"not timed on this CPU (no bf16 kernels): {', '.join(skipped)}", flush=True)
    torch.set_num_threads(args.threads)
    ready = dict(kv.split("=", 1) for kv in args.int8)
    pk = peaks(args.threads) if not args.no_timing else {"fp32": 0, "bf16": 0, "int8_ort": 0, "int8_torch": 0}
    print(f"peaks ({args.threads} threads), G(FL)OP/s: " + ", ".join(
        f"{k} {'-' if v is None else f'{v:.0f}'}" for k, v in pk.items()))
    peak_of = {"fp32": pk["fp32"], "bf16": pk["bf16"], "onnx_fp32": pk["fp32"], "onnx_int8": pk["int8_ort"],
               "ov_fp32": pk["fp32"], "ov_bf16": pk["bf16"], "ov_int8": pk["int8_ort"], "ov_int8_bf16": pk["int8_ort"]}
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="attnseg_precision_") as tmp:
        for name in args.models.split(","):
            model = load(name)
            fp32_path = export_onnx(model, Path(tmp) / f"{name}.onnx", dynamic=True)
            int8_path = (Path(ready[name]) if name in ready else int8_graph(
                model, name, Path(tmp) / f"{name}.int8.onnx", args.calibrate, args.calib_images)
                if "onnx_int8" in variants or args.agreement else None)
            paths = {"onnx_fp32": str(fp32_path), "onnx_int8": str(int8_path)}
            if any(v.startswith("ov_int8") for v in variants):
                paths["ov_int8"] = paths["ov_int8_bf16"] = str(ov_int8_graph(
                    model, Path(tmp) / f"{name}.int8.xml", args.calibrate, args.calib_images))
            if args.agreement:
                agree = agreement(model, int8_path, args.agreement, args.agreement_images, args.threads)
                rows.append({"model": name, "agreement_with_fp32": agree})
                print(f"{name:<28} pixel agreement with fp32 on {agree['images']} images of {args.agreement}: "
                      f"int8 {100 * agree['onnx_int8']:.2f}%, bf16 {100 * agree['bf16']:.2f}%", flush=True)
            for size in ([] if args.no_timing else sizes):
                macs = count_flops(model, size, paper=False)["gmacs"]
                per_round = time_interleaved({v: (make_runner, (v, name, paths.get(v))) for v in variants},
                                             (1, 3, *size), args.threads, args.rounds, args.iters)
                ms = {v: statistics.median(t) for v, t in per_round.items()}
                ratio = {f"{v}_vs_onnx_fp32": statistics.median(a / b for a, b in zip(per_round["onnx_fp32"],
                                                                                       per_round[v]))
                         for v in variants if v != "onnx_fp32" and "onnx_fp32" in per_round}
                if "fp32" in per_round and "bf16" in per_round:
                    ratio["bf16_vs_fp32"] = statistics.median(a / b for a, b in zip(per_round["fp32"], per_round["bf16"]))
                row = {"model": name, "size": f"{size[0]}x{size[1]}", "gmacs": macs, "ms": ms,
                       "images_per_s": {v: 1000 / m for v, m in ms.items()}, "speedup": ratio,
                       "of_peak": {v: 2 * macs / (ms[v] / 1000) / peak_of[v] for v in variants if peak_of[v]}}
                rows.append(row)
                print(f"{name:<28} {row['size']:>8} " + "  ".join(
                    f"{v} {1000 / ms[v]:6.2f} img/s ({100 * row['of_peak'].get(v, 0):4.1f}% peak)" for v in variants)
                    + "  " + "  ".join(f"{k} {r:.2f}x" for k, r in ratio.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "iters": args.iters,
                                               "machine": machine(args.threads), "peaks": pk, "rows": rows}, indent=1))


def _bf16(model, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


if __name__ == "__main__":
    main()

"""On a GPU: eager fp32 / fp16 / bf16 (autocast) of attnseg's models, transformers' SegFormer beside
ours with the same weights, and onnxruntime's CUDA provider where it is installed, timed in one run.

For each (model, size, batch) every variant is timed interleaved: round r runs each variant `--iters`
times after one untimed call, synchronising the device around each timed call; the medians of the rounds
and the per-round ratios against our fp32 are reported, with each variant's peak device memory.
SegFormer-B0/B2 are built in transformers with seeded random weights and loaded into attnseg through the
converter (the logits must agree in fp32 before anything is timed), as in benchmarks/vs_transformers.py;
the other models are attnseg's (edaformer-t random, the shipped SANet trained).

    python benchmarks/gpu_precision.py --device cuda --json results/precision/gpu.json
    python benchmarks/gpu_precision.py --device cpu --models segformer-b0 --sizes 64x64 --rounds 1  # smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attnseg  # noqa: E402
from timing import time_once  # noqa: E402
from vs_transformers import make_pair  # noqa: E402

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runner(model, dtype, device: torch.device, hf: bool = False):
    """A call that runs `model` on a batch under autocast of `dtype` (None: fp32) and returns fp32 logits."""
    def run(x):
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = model(pixel_values=x).logits if hf else model(x)
        return out.float()
    return run


def ort_cuda_runner(model, size, device: torch.device):
    """onnxruntime with CUDAExecutionProvider on our fp32 ONNX export, or None where it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime not installed"
    if device.type != "cuda" or "CUDAExecutionProvider" not in ort.get_available_providers():
        return None, "no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    from attnseg.deploy.export import export_onnx

    path = export_onnx(model.cpu(), Path(tempfile.mkdtemp()) / "m.onnx", dynamic=True, example_size=size)
    model.to(device)
    sess = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", {"device_id": device.index or 0}),
                                                      "CPUExecutionProvider"])

    def run(x):
        return torch.from_numpy(sess.run(None, {"images": x.cpu().numpy()})[0])
    return run, None


def time_variants(fns: dict, x, device, rounds: int, iters: int) -> dict:
    """{variant: per-round median ms}, the variants one after the other in each round, in this process
    (one CUDA context; the host-side pools that benchmarks/timing.py separates are idle here)."""
    per_round = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            per_round[k].append(time_once(lambda x: (fn(x), sync(device)), x, iters))
    return per_round


def peak_memory(fn, x, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn(x)
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def build(name: str, device):
    """{variant: call} for one model; transformers' SegFormer beside ours where the model is a SegFormer."""
    fns, notes = {}, {}
    if name in ("segformer-b0", "segformer-b2"):
        ref, ours = make_pair(name.split("-")[1])
        x = torch.randn(1, 3, 256, 256)
        with torch.inference_mode():
            diff = (ref(pixel_values=x).logits - ours(x)).abs().max().item()
        if diff > 1e-4:
            raise RuntimeError(f"{name}: attnseg and transformers disagree in fp32 (max |diff| {diff:.2e})")
        notes["parity_max_abs_diff"] = diff
        ref.to(device)
    else:
        ours = (attnseg.load_model(name) if name in attnseg.list_pretrained() else
                (torch.manual_seed(0), attnseg.create_model(name, num_classes=150))[1]).eval()
        ref = None
    ours.to(device)
    for k, dt in DTYPES.items():
        fns[k] = runner(ours, dt, device)
    if ref is not None:
        fns["transformers fp32"] = runner(ref, None, device, hf=True)
        fns["transformers fp16"] = runner(ref, torch.float16, device, hf=True)
    return ours, fns, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="segformer-b0,segformer-b2,edaformer-t,sanet-effnet-lite0-camvid")
    ap.add_argument("--sizes", default="512x512,1024x1024")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-onnx", action="store_true", help="skip onnxruntime's CUDA provider")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine, or --device cpu for a smoke run")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}; {args.rounds} interleaved rounds of {args.iters}", flush=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for model_name in args.models.split(","):
        ours, fns, notes = build(model_name, device)
        if not args.no_onnx:
            ort_fn, why = ort_cuda_runner(ours, sizes[0], device)
            if ort_fn is not None:
                fns["onnxruntime cuda fp32"] = ort_fn
            else:
                notes["onnxruntime"] = why
        for size in sizes:
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.randn(batch, 3, *size, device=device)
                with torch.inference_mode():
                    want = fns["fp32"](x)
                    err = {k: (fn(x).to(want.device) - want).abs().max().item() for k, fn in fns.items() if k != "fp32"}
                    agree = {k: (fn(x).to(want.device).argmax(1) == want.argmax(1)).float().mean().item()
                             for k, fn in fns.items() if k != "fp32"}
                per_round = time_variants(fns, x, device, args.rounds, args.iters)
                ms = {k: statistics.median(v) for k, v in per_round.items()}
                row = {"model": model_name, "size": f"{size[0]}x{size[1]}", "batch": batch, "device": name, **notes,
                       "ms": ms, "images_per_s": {k: 1000 * batch / v for k, v in ms.items()},
                       "speedup_vs_fp32": {k: statistics.median(a / b for a, b in zip(per_round["fp32"], v))
                                           for k, v in per_round.items()},
                       "max_abs_logit_diff_vs_fp32": err, "argmax_agreement_vs_fp32": agree,
                       "peak_mib": {k: peak_memory(fn, x, device) for k, fn in fns.items()}}
                rows.append(row)
                print(f"{model_name:<26} {row['size']:>9} b{batch:<2} " + "  ".join(
                    f"{k} {row['images_per_s'][k]:.1f} img/s ({row['speedup_vs_fp32'][k]:.2f}x)" for k in ms),
                    flush=True)
                del x
        del ours, fns
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def markdown(rows: list[dict]) -> str:
    cols = ["fp32", "fp16", "bf16", "transformers fp32", "transformers fp16", "onnxruntime cuda fp32"]
    cols = [c for c in cols if any(c in r["ms"] for r in rows)]
    out = ["| model, size, batch | " + " | ".join(f"{c} img/s" for c in cols) + " |",
           "| --- |" + " --- |" * len(cols)]
    for r in rows:
        cells = [f"{r['images_per_s'][c]:.1f} ({r['speedup_vs_fp32'][c]:.2f}x)" if c in r["ms"] else "" for c in cols]
        out.append(f"| {r['model']}, {r['size']}, {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

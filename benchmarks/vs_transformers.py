"""attnseg vs transformers' SegFormer, same weights, one process, interleaved timings (A B A B ...).

1. Builds transformers' SegformerForSemanticSegmentation with random weights, saves it, loads it into
   attnseg through the converter, and checks the logits agree (max abs diff <= 1e-4, fp32).
2. Inference: median latency of each, interleaved, per (model, size, batch); ratio = theirs / ours,
   with the spread of the per-round ratios.
3. Training step (forward + backward + AdamW step, batch 2, 512x512 crops, CE loss on full-res logits).
4. With --onnx: transformers exported as a user would (torch.onnx.export, TorchScript tracer, opset 17),
   attnseg by `export_onnx` (dynamo, opset 20, fixed 512x512); both run in onnxruntime with the same threads,
   each session in a process of its own (benchmarks/timing.py: two sessions in one process keep both
   thread pools spinning side by side), interleaved in rounds.

Usage: python benchmarks/vs_transformers.py [--threads 2] [--rounds 5] [--full] [--onnx] [--json out.json]
Default grid: B0 and B2 at 512x512 batch 1, B0 at 1024x1024 batch 1; --full adds batch 8 and B2 at 1024.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.test_loading.hf_model
sys.path.insert(0, str(Path(__file__).resolve().parent))
import attnseg  # noqa: E402
from timing import time_interleaved  # noqa: E402

HF_VARIANTS = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=256),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_attention_heads=[1, 2, 5, 8],
               decoder_hidden_size=768),
}


def make_pair(variant: str, classes: int = 150):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(SegformerConfig(num_labels=classes, **HF_VARIANTS[variant])).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    d = tempfile.mkdtemp()
    ref.save_pretrained(d)
    ours = attnseg.load_model(d).eval()
    return ref, ours


def interleaved(fa, fb, rounds: int, warmup: int = 1):
    for _ in range(warmup):
        fa(), fb()
    ta, tb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    ratios = [a / b for a, b in zip(ta, tb)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios), min(ratios), max(ratios)


def row(name, a, b, r, lo, hi):
    print(f"{name:<38} {1000 * a:>10.1f} {1000 * b:>10.1f} {r:>7.2f}x  ({lo:.2f}..{hi:.2f})", flush=True)
    return {"case": name, "transformers_ms": 1000 * a, "attnseg_ms": 1000 * b, "speedup": r, "min": lo, "max": hi}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also batch 8 and B2 at 1024x1024 (slow on CPU)")
    ap.add_argument("--onnx", action="store_true", help="also compare ONNX exports in onnxruntime")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} interleaved rounds per case")
    print(f"{'case':<38} {'hf ms':>10} {'ours ms':>10} {'speedup':>8}")
    pairs = {v: make_pair(v) for v in ("b0", "b2")}
    for v, (ref, ours) in pairs.items():
        x = torch.randn(1, 3, 512, 512)
        with torch.inference_mode():
            diff = (ref(pixel_values=x).logits - ours(x)).abs().max().item()
        print(f"segformer-{v}: max |logits difference| = {diff:.2e} (fp32, 512x512)")
        assert diff <= 1e-4, diff
        results.append({"case": f"parity {v}", "max_abs_diff": diff})
    grid = [("b0", 512, 1), ("b2", 512, 1), ("b0", 1024, 1)]
    if args.full:
        grid += [("b0", 512, 8), ("b2", 512, 8), ("b2", 1024, 1), ("b0", 1024, 8), ("b2", 1024, 8)]
    for v, size, batch in grid:
        ref, ours = pairs[v]
        x = torch.randn(batch, 3, size, size)

        def fa():
            with torch.inference_mode():
                ref(pixel_values=x)

        def fb():
            with torch.inference_mode():
                ours(x)

        results.append(row(f"infer segformer-{v} {size}x{size} b{batch}", *interleaved(fa, fb, args.rounds)))
    if not args.no_train:
        for v in ("b0",):
            ref, ours = make_pair(v)
            ref.train(), ours.train()
            x = torch.randn(2, 3, 512, 512)
            y = torch.randint(0, 150, (2, 512, 512))
            oa = torch.optim.AdamW(ref.parameters(), 6e-5)
            ob = torch.optim.AdamW(ours.parameters(), 6e-5)

            def step(model, opt, logits_fn):
                logits = F.interpolate(logits_fn(), size=(512, 512), mode="bilinear", align_corners=False)
                loss = F.cross_entropy(logits, y, ignore_index=255)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            results.append(row(f"train step segformer-{v} 512x512 b2", *interleaved(
                lambda: step(ref, oa, lambda: ref(pixel_values=x).logits), lambda: step(ours, ob, lambda: ours(x)),
                max(3, args.rounds // 2))))
    if args.onnx:
        results += onnx_compare(pairs["b0"], args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def onnx_compare(pair, args) -> list[dict]:
    import numpy as np

    from attnseg.deploy.export import export_onnx

    ref, ours = pair
    d = Path(tempfile.mkdtemp())
    x = torch.randn(1, 3, 512, 512)

    class HFLogits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).logits

    torch.onnx.export(HFLogits(ref), (x,), str(d / "hf.onnx"), opset_version=17, input_names=["pixel_values"],
                      output_names=["logits"], dynamo=False)
    # fixed 512x512 like the traced transformers export (`attnseg export` without --dynamic does the same)
    export_onnx(ours, d / "ours.onnx", dynamic=False, example_size=(512, 512))
    with torch.inference_mode():
        want = ours(x).numpy()
    got = ort_runner(str(d / "ours.onnx"), "images")(x)[0]
    diff = float(np.abs(got - want).max())
    print(f"onnxruntime attnseg export vs eager: max |diff| = {diff:.2e}")
    out = [{"case": "onnx parity b0", "max_abs_diff": diff}]
    per_round = time_interleaved({"hf": (ort_runner, (str(d / "hf.onnx"), "pixel_values")),
                                  "ours": (ort_runner, (str(d / "ours.onnx"), "images"))},
                                 (1, 3, 512, 512), args.threads, args.rounds, iters=2)
    ta, tb = per_round["hf"], per_round["ours"]
    ratios = [a / b for a, b in zip(ta, tb)]
    out.append(row("onnxruntime segformer-b0 512x512 b1", statistics.median(ta) / 1000, statistics.median(tb) / 1000,
                   statistics.median(ratios), min(ratios), max(ratios)))
    return out


def ort_runner(path: str, input_name: str):
    """One onnxruntime session on this process's threads (runs in a timing worker)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {input_name: x.numpy()})


if __name__ == "__main__":
    main()

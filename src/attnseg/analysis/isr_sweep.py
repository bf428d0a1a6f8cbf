"""ISR trade-off sweep: mIoU, GFLOPs and latency for a grid of Inference Spatial Reduction settings,
written as JSON, a Markdown table and a PNG plot of mIoU against GFLOPs (drawn with PIL)."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from .. import isr

from ..engine.evaluate import evaluate
from ..inference.modes import InferenceConfig
from ..io import atomic_save, atomic_write_text
from .benchmark import benchmark_model
from .flops import count_flops

DEFAULT_GRID = list(isr.GRID)


def sweep(model, dataset, settings: list[str], size: tuple[int, int], mean, std, threads_note: str = "",
          latency_iters: int = 5, progress: bool = True) -> list[dict]:
    rows = []
    for s in settings:
        isr.apply(model, s)
        m = evaluate(model, dataset, InferenceConfig(), mean, std, progress=progress)
        f = count_flops(model, size)
        lat = benchmark_model(model, size, warmup=1, iters=latency_iters)
        rows.append({"isr": s, "mIoU": m["mIoU"], "aAcc": m["aAcc"], "gmacs": f["gmacs"],
                     "latency_ms": lat["median_ms"]})
    isr.reset(model)
    base = rows[0]
    for r in rows:
        r["gmacs_cut"] = 1 - r["gmacs"] / base["gmacs"]
        r["latency_cut"] = 1 - r["latency_ms"] / base["latency_ms"]
        r["mIoU_delta"] = r["mIoU"] - base["mIoU"]
    return rows


def markdown(rows: list[dict], size) -> str:
    out = [f"| ISR enc:dec | GFLOPs ({size[0]}x{size[1]}) | FLOPs cut | CPU latency (ms) | latency cut | mIoU | "
           "delta mIoU |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['isr']} | {r['gmacs']:.2f} | {100 * r['gmacs_cut']:.0f}% | {r['latency_ms']:.0f} | "
                   f"{100 * r['latency_cut']:.0f}% | {100 * r['mIoU']:.2f} | {100 * r['mIoU_delta']:+.2f} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, title: str) -> None:
    W, H, pad = 720, 480, 70
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    xs = [r["gmacs"] for r in rows]
    ys = [100 * r["mIoU"] for r in rows]
    x0, x1 = min(xs) * 0.95, max(xs) * 1.05
    y0, y1 = min(ys) - 1, max(ys) + 1

    def px(x, y):
        return pad + (x - x0) / (x1 - x0) * (W - 2 * pad), H - pad - (y - y0) / (y1 - y0) * (H - 2 * pad)

    d.line([(pad, H - pad), (W - pad, H - pad)], fill="black")
    d.line([(pad, pad), (pad, H - pad)], fill="black")
    for i in range(5):
        gx = x0 + (x1 - x0) * i / 4
        gy = y0 + (y1 - y0) * i / 4
        X, _ = px(gx, y0)
        _, Y = px(x0, gy)
        d.text((X - 12, H - pad + 8), f"{gx:.2f}", fill="black")
        d.text((8, Y - 6), f"{gy:.1f}", fill="black")
    for r, x, y in zip(rows, xs, ys):
        X, Y = px(x, y)
        d.ellipse([X - 4, Y - 4, X + 4, Y + 4], fill=(30, 90, 200))
        d.text((X + 6, Y - 14), r["isr"], fill=(60, 60, 60))
    d.text((W // 2 - 40, H - 30), "GFLOPs (MACs)", fill="black")
    d.text((8, 20), "mIoU (%)", fill="black")
    d.text((W // 2 - 120, 20), title, fill="black")
    atomic_save(im, path)


def write_outputs(rows, out_dir: Path, size, title: str) -> None:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "isr_sweep.json", json.dumps(rows, indent=2))
    atomic_write_text(out_dir / "isr_sweep.md", markdown(rows, size) + "\n")
    plot(rows, out_dir / "isr_sweep.png", title)

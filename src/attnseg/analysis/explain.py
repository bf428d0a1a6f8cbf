"""Attention maps for one pixel (`attnseg explain`): what the model's own attention layers weighed.

Each attention module has a `record` slot; while `recording(model)` is active it is a list, and the module's
forward appends the weights it applies (not a second implementation): SegFormer's and EDAFormer's
softmax(q k^T / sqrt(d)) over the reduced keys, the non-local blocks' normalised pairwise weights f / C(x),
SANet's attention channels X_attn (shown, as in the paper's Fig. 6, as the L2 distance between the chosen
pixel's attention vector and every other position's, small = alike). LSeg's per-label similarity maps are
its softmax over labels. When no list is set the modules skip all of this.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class AttentionMap:
    name: str  # module path, e.g. backbone.block1.0.attn
    kind: str  # "attention" | "nonlocal" | "sa-channels" | "label"
    heat: np.ndarray  # (H, W) at the image size; attention rows sum to 1 over keys before upsampling
    row: np.ndarray | None = None  # the raw weights over the key grid (mean over heads), for checks


def attention_modules(model) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "record")]


@contextlib.contextmanager
def recording(model):
    mods = attention_modules(model)
    for _, m in mods:
        m.record = []
    try:
        yield mods
    finally:
        for _, m in mods:
            m.record = None


def _up(a: np.ndarray, size) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def explain(model, x: torch.Tensor, pixel: tuple[int, int], labels: list[str] | None = None) -> list[AttentionMap]:
    """Maps for the pixel (y, x) of the normalised input x (1, 3, H, W), one per attention layer."""
    H, W = x.shape[-2:]
    py, px = pixel
    if not (0 <= py < H and 0 <= px < W):
        raise ValueError(f"pixel {py},{px} is outside the {H}x{W} input")
    out = []
    kw = {"labels": labels} if labels else {}
    with torch.inference_mode(), recording(model) as mods:
        logits = model.eval()(x, **kw)
        for name, m in mods:
            for k, rec in enumerate(m.record):
                tag = name if len(m.record) == 1 else f"{name}[{k}]"
                if isinstance(rec, tuple):  # (weights (B, heads, N, M), query grid, key grid)
                    w, (h, wq), (kh, kw_) = rec
                    qi = min(int(py * h / H), h - 1) * wq + min(int(px * wq / W), wq - 1)
                    row = w[0, :, qi].float().mean(0).numpy()  # mean over heads, (M,)
                    kind = "nonlocal" if "nl" in type(m).__name__.lower() or "NonLocal" in type(m).__name__ \
                        else "attention"
                    out.append(AttentionMap(tag, kind, _up(row.reshape(kh, kw_), (H, W)), row))
                else:  # SANet X_attn (B, C, h, w): L2 distance to the chosen pixel's attention vector
                    a = rec[0].float()
                    h, wq = a.shape[-2:]
                    v = a[:, min(int(py * h / H), h - 1), min(int(px * wq / W), wq - 1)]
                    dist = (a - v[:, None, None]).norm(dim=0).numpy()
                    out.append(AttentionMap(tag, "sa-channels", _up(-dist, (H, W))))
    if labels:
        prob = F.interpolate(logits.float(), size=(H, W), mode="bilinear", align_corners=False).softmax(1)[0]
        for i, lab in enumerate(labels):
            out.append(AttentionMap(f"label: {lab}", "label", prob[i].numpy()))
    return out


def save_maps(maps: list[AttentionMap], rgb: np.ndarray, pixel: tuple[int, int], out_dir, title: str) -> list:
    """One overlay PNG per map (the image under a heat map, the pixel marked) and a contact sheet."""
    from pathlib import Path

    from ..io import atomic_write
    from ..plots import pyplot

    plt = pyplot()
    out_dir = Path(out_dir)
    written = []

    def draw(ax, m):
        ax.imshow(rgb)
        heat = m.heat - m.heat.min()
        ax.imshow(heat / max(heat.max(), 1e-12), cmap="jet", alpha=0.5)
        ax.plot([pixel[1]], [pixel[0]], marker="+", color="white", markersize=12, mew=2)
        ax.set_title(m.name, fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])

    for i, m in enumerate(maps):
        fig, ax = plt.subplots(figsize=(5, 5 * rgb.shape[0] / rgb.shape[1] + 0.4))
        draw(ax, m)
        fig.tight_layout()
        path = out_dir / f"{i:02d}_{''.join(c if c.isalnum() else '_' for c in m.name)}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
        plt.close(fig)
        written.append(path)
    cols = min(6, max(len(maps), 1))
    rows = (len(maps) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows * rgb.shape[0] / rgb.shape[1] + 0.6),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, m in zip(axes.ravel(), maps):
        ax.axis("on")
        draw(ax, m)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    sheet = out_dir / "contact_sheet.png"
    atomic_write(sheet, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return written + [sheet]

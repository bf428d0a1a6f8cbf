"""Effective receptive fields (Luo et al., NeurIPS 2016; SegFormer Fig. 3; RepLKNet's area analysis).

For an output map Y (B, C, h, w) of a stage, the ERF is the gradient of the centre position
sum_c ReLU(Y[:, c, h/2, w/2]) with respect to the input image (the ReLU as in RepLKNet's ERF code: a plain
channel sum of a LayerNorm output has zero gradient wherever the norm's scale is uniform), in absolute value, summed over the input
channels and averaged over images. Shown as log10(1 + ERF / max) normalised to [0, 1], one panel per
encoder stage and one for the decoder output. `square_sides` gives the side of the smallest centred
square holding 20 / 50 / 99% of the total (RepLKNet's high-contribution area ratio, as a side length).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def centre_gradient(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """|d (sum_c ReLU(fn(x)[:, c, h/2, w/2])) / d x| summed over input channels and batch: (H, W)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        h, w = y.shape[-2:]
        torch.relu(y[:, :, h // 2, w // 2]).sum().backward()
    return x.grad.abs().sum((0, 1)).double().numpy()


def square_sides(erf: np.ndarray, fractions=(0.2, 0.5, 0.99)) -> dict[str, int]:
    """Side of the smallest square centred on the map's centre that holds each fraction of the total."""
    H, W = erf.shape
    cy, cx = H // 2, W // 2
    total = erf.sum()
    out = {}
    for f in fractions:
        side = max(H, W)
        for r in range(max(H, W)):
            if erf[max(cy - r, 0):cy + r + 1, max(cx - r, 0):cx + r + 1].sum() >= f * total - 1e-12 * total:
                side = min(2 * r + 1, max(H, W))
                break
        out[f"{round(100 * f)}%"] = side
    return out


def model_outputs(model, labels: list[str] | None = None) -> dict[str, Callable]:
    """Named functions image -> map: each encoder stage (`model.backbone(x)[i]`) and the decoder output."""
    outs = {}
    for i in range(4):
        outs[f"stage {i + 1}"] = (lambda k: lambda x: model.backbone(x)[k])(i)
    if hasattr(model, "decoder_features"):  # LSeg: the fused image features the labels are scored against
        outs["decoder"] = model.decoder_features
    else:
        outs["decoder"] = lambda x: model(x)
    return outs


def compute_erf(model, images: list[torch.Tensor], progress: bool = False) -> dict[str, np.ndarray]:
    """ERF maps (H, W) per output, averaged over `images` (normalised (1, 3, H, W) tensors, one size)."""
    from tqdm import tqdm

    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fns = model_outputs(model)
    acc = {name: None for name in fns}
    for x in tqdm(images, desc="ERF", disable=not progress):
        for name, fn in fns.items():
            g = centre_gradient(fn, x)
            acc[name] = g if acc[name] is None else acc[name] + g
    return {k: v / len(images) for k, v in acc.items()}


def normalise(erf: np.ndarray) -> np.ndarray:
    """log10(1 + ERF / max ERF), scaled to [0, 1] (SegFormer / RepLKNet's display)."""
    v = np.log10(1 + erf / max(erf.max(), 1e-30))
    return v / max(v.max(), 1e-30)


def plot_erf(maps: dict[str, np.ndarray], path, title: str) -> None:
    from ..plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.6))
    for ax, (name, erf) in zip(np.atleast_1d(axes), maps.items()):
        ax.imshow(normalise(erf), cmap="RdYlGn", vmin=0, vmax=1)
        sides = square_sides(erf)
        ax.set_title(f"{name}\n99%: {sides['99%']} px, 50%: {sides['50%']} px", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # room for the title above the panel titles
    from ..io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

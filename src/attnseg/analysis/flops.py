"""FLOPs and parameter counting.

Counts with `torch.utils.flop_counter.FlopCounterMode` (matmuls, linears, convolutions) plus the
attention products, which the stock counter misses on CPU (`_scaled_dot_product_flash_attention_for_cpu`):
softmax(Q K^T) V costs 2 * B * heads * N * M * d multiply-accumulates. Reported "GFLOPs" are
GMACs (multiply-accumulates / 1e9), the convention of the SegFormer and EDAFormer papers' tables.
Elementwise ops, norms, softmax and interpolation are not counted (nor are they by the papers' tools).

`paper=True` (default) counts the architecture as published: SegFormer's decoder is counted with
its literal concat + fuse, not our equivalent fast path (see models/segformer.py), which executes far
fewer operations; `paper=False` counts what actually runs.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def _sdpa_flops(query_shape, key_shape, value_shape) -> int:
    b, h, n, d = query_shape
    m = key_shape[-2]
    dv = value_shape[-1]
    return 2 * b * h * n * m * (d + dv)  # FLOPs (2 per MAC): Q K^T and (.) V


def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return _sdpa_flops(query_shape, key_shape, value_shape)  # FlopCounterMode passes shapes


def _custom_mapping() -> dict:
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _cpu_flash_flops
    return mapping


def count_flops(model: torch.nn.Module, size: tuple[int, int], paper: bool = True, batch: int = 1,
                model_kwargs: dict | None = None) -> dict:
    """{'gmacs': ..., 'params_m': ..., 'by_op': {...}} for one forward pass at `size` (H, W)."""
    model = model.eval()
    head = getattr(model, "decode_head", None)
    old = None
    if paper and head is not None and hasattr(head, "fused"):
        old, head.fused = head.fused, False
    x = torch.randn(batch, 3, *size)
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    try:
        with torch.no_grad(), counter:
            model(x, **(model_kwargs or {}))
    finally:
        if old is not None:
            head.fused = old
    by_op = {str(k).replace("aten.", ""): v / 2e9 for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"gmacs": counter.get_total_flops() / 2e9, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "by_op": by_op}

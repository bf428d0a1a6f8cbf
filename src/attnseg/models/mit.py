"""Mix Transformer (MiT), the SegFormer encoder.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021, Section 3.1. Parameter names follow the official release
(NVlabs/SegFormer, mmseg/models/backbones/mix_transformer.py) so its checkpoints load strictly.

Four stages. Stage i:
  * Overlapped patch merging: Conv(K=7,S=4,P=3) for stage 1, Conv(K=3,S=2,P=1) after, then LayerNorm.
  * depth_i Transformer blocks:  x = x + DropPath(Attn(LN(x)));  x = x + DropPath(MixFFN(LN(x)))
  * a stage LayerNorm, then the tokens are reshaped to a (B, C_i, H/2^(i+1), W/2^(i+1)) map.

Efficient self-attention (Eq. 1-2): the key/value sequence is shortened by the reduction ratio R
    Eq. 2:  K_hat = Reshape(N/R, C*R)(K);  K = Linear(C*R, C)(K_hat)
which the release implements as a Conv(K=R, S=R) `sr` over the token map followed by LayerNorm:
    Attention(Q, K, V) = Softmax(Q K^T / sqrt(d_head)) V
Mix-FFN (Eq. 3): x_out = MLP(GELU(Conv3x3(MLP(x_in)))) + x_in  (depthwise 3x3; no positional encoding).

Inference Spatial Reduction (ISR, from EDAFormer, applied here to MiT): `set_isr(factors)` pools the
reduced key/value token map by an extra factor per stage with average pooling *after* `sr` and
before its LayerNorm. After `sr` because `sr` is a linear strided conv trained on full-resolution
input: averaging its outputs is the same as a wider `sr` whose kernel is the trained one averaged
over neighbouring windows, so every trained weight still sees the statistics it was trained on.
Factor 1 leaves the computation untouched (bit-identical outputs).

Layout note: tokens stay (B, N, C); where a conv needs a map we view them as a channels-last
(B, C, H, W) tensor, so the reshapes around every conv are free (no copies).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, check_images, exporting, map_to_tokens, tokens_to_map


@dataclass
class MiTConfig:
    embed_dims: list[int] = field(default_factory=lambda: [32, 64, 160, 256])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_heads: list[int] = field(default_factory=lambda: [1, 2, 5, 8])
    mlp_ratios: list[float] = field(default_factory=lambda: [4, 4, 4, 4])
    sr_ratios: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    patch_sizes: list[int] = field(default_factory=lambda: [7, 3, 3, 3])
    strides: list[int] = field(default_factory=lambda: [4, 2, 2, 2])
    in_chans: int = 3
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # LayerNorm eps differs between sources; match the one you load from (see convert/):
    # official MiT: 1e-6 in blocks and stage norms, 1e-5 in patch embeddings and `attn.norm`;
    # transformers: 1e-5 everywhere; mmseg 1.x: 1e-6 everywhere.
    norm_eps: float = 1e-6
    patch_norm_eps: float = 1e-5
    sr_norm_eps: float = 1e-5


class OverlapPatchEmbed(nn.Module):
    """Overlapped patch merging: strided conv with padding K//2, then LayerNorm."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, dim: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, C, H', W')
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w  # (B, N, C)


class Attention(nn.Module):
    """Efficient self-attention with sequence reduction ratio R (`sr`, Eq. 2)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool, attn_drop: float,
                 proj_drop: float, sr_norm_eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)
        self.isr = 1  # extra inference-time pooling factor (ISR); 1 = off
        self.record: list | None = None  # tools/explain.py: a list to append the attention weights to

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, N, C = x.shape
        nh, d = self.num_heads, C // self.num_heads
        q = self.q(x).view(B, N, nh, d).transpose(1, 2)  # (B, nh, N, d)
        kh, kw = h, w
        if self.sr_ratio > 1 or self.isr > 1:
            x_ = tokens_to_map(x, h, w)  # (B, C, H, W), channels-last view
            if self.sr_ratio > 1:
                x_ = self.sr(x_)  # (B, C, H/R, W/R)
            if self.isr > 1:
                x_ = F.avg_pool2d(x_, self.isr, self.isr, ceil_mode=True)
            kh, kw = x_.shape[-2:]
            x_ = map_to_tokens(x_)  # (B, N/R^2, C)
            if self.sr_ratio > 1:
                x_ = self.norm(x_)
        else:
            x_ = x
        k, v = self.kv(x_).view(B, -1, 2, nh, d).permute(2, 0, 3, 1, 4)  # 2 x (B, nh, M, d)
        drop = self.attn_drop if self.training else 0.0
        if self.record is not None:  # the weights SDPA applies, kept for inspection (not on the fast path)
            self.record.append((((q @ k.transpose(-2, -1)) * d ** -0.5).softmax(-1).detach(), (h, w), (kh, kw)))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # softmax(q k^T / sqrt(d)) v
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class DWConv(nn.Module):
    """3x3 depthwise conv over the token map (`mlp.dwconv.dwconv`): Mix-FFN's positional cue."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, h, w)))


class MixFFN(nn.Module):
    """Eq. 3: fc1 -> 3x3 depthwise conv -> GELU -> fc2. `relu=True` adds a ReLU after fc1
    (PVTv2's "linear" FFN, used by EDAFormer's encoder)."""

    def __init__(self, dim: int, hidden: int, drop: float, relu: bool = False):
        super().__init__()
        self.relu = relu
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if exporting() and not self.training:
            # the same map with fc1/fc2 as 1x1 convs: onnxruntime then runs fc1 -> dwconv -> GELU -> fc2 in
            # its blocked NCHWc layout, re-laying out C channels instead of the 4x wider hidden tensor
            x = F.conv2d(tokens_to_map(x, h, w), self.fc1.weight[:, :, None, None], self.fc1.bias)
            x = self.act(self.dwconv.dwconv(torch.relu(x) if self.relu else x))
            return map_to_tokens(F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias))
        x = self.fc1(x)
        if self.relu:
            x = torch.relu(x)
        x = self.drop(self.act(self.dwconv(x, h, w)))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, cfg: MiTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, num_heads, sr_ratio, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate,
                              cfg.sr_norm_eps)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), cfg.drop_rate)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class TokenStages(nn.Module):
    """Four-stage token pyramid shared by MiT and EDAFormer's EFT (the EFT release is built on MiT):
    stage i = `patch_embed{i}` -> `block{i}` (blocks taking (tokens, h, w), with `attn.isr`) -> `norm{i}`."""

    num_stages: int
    cfg: MiTConfig

    def set_isr(self, factors: list[int] | None) -> None:
        """Inference Spatial Reduction: extra key/value pooling factor per stage ([1]*4 = off)."""
        factors = [1] * self.num_stages if factors is None else [int(f) for f in factors]
        if len(factors) != self.num_stages or min(factors) < 1:
            raise ValueError(f"ISR encoder factors must be {self.num_stages} integers >= 1, got {factors}")
        for i, f in enumerate(factors):
            for blk in getattr(self, f"block{i + 1}"):
                blk.attn.isr = f

    def forward_tokens(self, x: torch.Tensor) -> list[tuple[torch.Tensor, int, int]]:
        """Per stage: normalised tokens (B, N_i, C_i) and their grid size (h_i, w_i)."""
        outs = []
        x = x.contiguous(memory_format=torch.channels_last)
        for i in range(1, self.num_stages + 1):
            t, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                t = blk(t, h, w)
            t = getattr(self, f"norm{i}")(t)
            outs.append((t, h, w))
            x = tokens_to_map(t, h, w)
        return outs

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        check_images(images, self.cfg.in_chans)
        return [tokens_to_map(t, h, w) for t, h, w in self.forward_tokens(images)]


class MixVisionTransformer(TokenStages):
    """MiT encoder. `forward(images)` -> four feature maps at strides 4, 8, 16, 32."""

    def __init__(self, cfg: MiTConfig | None = None):
        super().__init__()
        cfg = cfg or MiTConfig()
        self.cfg = cfg
        n = len(cfg.depths)
        for name in ("embed_dims", "num_heads", "mlp_ratios", "sr_ratios", "patch_sizes", "strides"):
            if len(getattr(cfg, name)) != n:
                raise ValueError(f"MiTConfig.{name} must have {n} entries (one per stage), got {getattr(cfg, name)}")
        self.num_stages = n
        self.out_channels = list(cfg.embed_dims)
        total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear decay rule
        cur = 0
        for i in range(n):
            cin = cfg.in_chans if i == 0 else cfg.embed_dims[i - 1]
            setattr(self, f"patch_embed{i + 1}",
                    OverlapPatchEmbed(cfg.patch_sizes[i], cfg.strides[i], cin, cfg.embed_dims[i], cfg.patch_norm_eps))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(cfg.embed_dims[i], cfg.num_heads[i], cfg.mlp_ratios[i], cfg.sr_ratios[i], cfg, dpr[cur + j])
                for j in range(cfg.depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(cfg.embed_dims[i], eps=cfg.norm_eps))
            cur += cfg.depths[i]
        self.apply(init_weights)


def init_weights(m: nn.Module) -> None:
    # The official initialisation: trunc-normal(0.02) linears, fan-out normal convs, unit LayerNorms.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_B1_DIMS = [64, 128, 320, 512]
MIT_CONFIGS: dict[str, dict] = {
    "b0": dict(embed_dims=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "b1": dict(embed_dims=_B1_DIMS, depths=[2, 2, 2, 2]),
    "b2": dict(embed_dims=_B1_DIMS, depths=[3, 4, 6, 3]),
    "b3": dict(embed_dims=_B1_DIMS, depths=[3, 4, 18, 3]),
    "b4": dict(embed_dims=_B1_DIMS, depths=[3, 8, 27, 3]),
    "b5": dict(embed_dims=_B1_DIMS, depths=[3, 6, 40, 3]),
    "tiny": dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4]),
}


def build_mit(config: dict) -> MixVisionTransformer:
    return MixVisionTransformer(MiTConfig(**config))


VARIANTS = {
    f"mit-{k}": dict(build=build_mit, config_class=MiTConfig, config=dict(v),
                     description=f"MiT-{k.upper()} encoder (features at strides 4/8/16/32)")
    for k, v in MIT_CONFIGS.items()
}

"""EDAFormer: Embedding-Free Transformer (EFT) encoder + all-attention decoder, with Inference
Spatial Reduction (ISR).

Yu et al., "Embedding-Free Transformer with Inference Spatial Reduction for Efficient Semantic
Segmentation", ECCV 2024. Names follow the official release (hyunwoo137/EDAFormer,
mmseg/models/backbones/eft.py and decode_heads/edaformer_head.py) so its checkpoints load strictly.

Embedding-free attention (EFA), for tokens x (B, N, C) on an H x W grid, pooling ratio r:
    Q   = x                                          (no query embedding)
    X_r = Conv1x1(AvgPool_r(x))                      (`attn.sr`; decoder: then LayerNorm `attn.norm`, GELU)
    K   = V = X_r                                    (no key/value embeddings)
    EFA(x) = Proj(Softmax(Q K^T / sqrt(d_head)) V)   (`attn.proj`; heads split C evenly)
EFT block (encoder):  x = x + DropPath(EFA(LN(x)));  x = x + DropPath(FFN(LN(x)))
    FFN = fc1 -> ReLU -> DWConv3x3 -> GELU -> fc2 (the decoder's FFN has no ReLU)
All-attention decoder on encoder stages 2..4: stage 4 passes 3 EFA blocks (8 heads, r = 1), stage 3
passes 2 (4 heads, r = 2), stage 2 one (2 heads, r = 4); stages 4 and 3 are resized to stage 2's
grid, concatenated [c4, c3, c2], fused (1x1 conv + BN + ReLU), dropout, classified: logits at 1/8.

ISR (Sec. 3.3): at inference the pooling ratios are multiplied by per-stage factors (encoder
`[f1..f4]`, decoder `[f_stage2, f_stage3, f_stage4]`), shrinking K/V; the weights do not change.
Where a grid is smaller than its pooling window (tiny inputs, large ISR) the window is clipped
to the grid, which the official code does not handle (it would produce an empty key set).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNAct, DropPath, check_images, resize, tokens_to_map
from .mit import MixFFN, OverlapPatchEmbed, TokenStages, init_weights


@dataclass
class EFTConfig:
    embed_dims: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    depths: list[int] = field(default_factory=lambda: [2, 2, 10, 2])
    num_heads: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    mlp_ratios: list[float] = field(default_factory=lambda: [3.8, 3.8, 3.8, 3.8])
    pool_ratios: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    in_chans: int = 3
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.2
    norm_eps: float = 1e-6  # block and stage norms; patch-embedding norms use 1e-5 as in the release


@dataclass
class EDAFormerConfig(EFTConfig):
    num_classes: int = 150
    decoder_dim: int = 128  # linear_fuse output (embed_dim): 128 for T, 768 for B
    decoder_mlp_ratio: float = 2.0  # 2 for T, 1 for B
    decoder_drop_path: float = 0.1
    decoder_heads: list[int] = field(default_factory=lambda: [2, 4, 8])  # stages 2, 3, 4
    decoder_pool_ratios: list[int] = field(default_factory=lambda: [4, 2, 1])  # stages 2, 3, 4
    dropout: float = 0.1


class EFA(nn.Module):
    """Embedding-free attention. `post_norm=True` is the decoder variant (LayerNorm + GELU after `sr`)."""

    def __init__(self, dim: int, num_heads: int, pool_ratio: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 post_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.pool_ratio = pool_ratio
        self.isr = 1
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr = nn.Conv2d(dim, dim, 1)
        self.post_norm = post_norm
        if post_norm:
            self.norm = nn.LayerNorm(dim)  # eps 1e-5 (decoder)
            self.act = nn.GELU()
        self.record: list | None = None  # tools/explain.py: a list to append the attention weights to

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, N, C = x.shape
        nh, d = self.num_heads, C // self.num_heads
        r = self.pool_ratio * self.isr
        q = x.view(B, N, nh, d).transpose(1, 2)  # Q = x, (B, nh, N, d)
        x_ = tokens_to_map(x, h, w)  # (B, C, H, W)
        if r > 1:
            kh, kw = min(r, h), min(r, w)
            x_ = F.avg_pool2d(x_, (kh, kw), (kh, kw))  # (B, C, H/r, W/r)
        kgrid = tuple(x_.shape[-2:])
        x_ = self.sr(x_).permute(0, 2, 3, 1).flatten(1, 2)  # 1x1 conv, (B, M, C)
        if self.post_norm:
            x_ = self.act(self.norm(x_))
        kv = x_.view(B, -1, nh, d).transpose(1, 2)  # K = V, (B, nh, M, d)
        if self.record is not None:  # the weights SDPA applies, kept for inspection (not on the fast path)
            self.record.append((((q @ kv.transpose(-2, -1)) * d ** -0.5).softmax(-1).detach(), (h, w), kgrid))
        out = F.scaled_dot_product_attention(q, kv, kv, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))


class EFTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, pool_ratio: int, drop_path: float,
                 eps: float, relu_ffn: bool, post_norm: bool, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EFA(dim, num_heads, pool_ratio, attn_drop, drop, post_norm)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop, relu=relu_ffn)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class EFT(TokenStages):
    """Embedding-Free Transformer encoder: four stages, features at strides 4, 8, 16, 32."""

    def __init__(self, cfg: EFTConfig | None = None):
        super().__init__()
        cfg = cfg or EFTConfig()
        self.cfg = cfg
        self.num_stages = n = len(cfg.depths)
        self.out_channels = list(cfg.embed_dims)
        total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        cur = 0
        for i in range(n):
            cin = cfg.in_chans if i == 0 else cfg.embed_dims[i - 1]
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2, cin,
                                                                 cfg.embed_dims[i], 1e-5))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                EFTBlock(cfg.embed_dims[i], cfg.num_heads[i], cfg.mlp_ratios[i], cfg.pool_ratios[i], dpr[cur + j],
                         cfg.norm_eps, relu_ffn=True, post_norm=False, drop=cfg.drop_rate,
                         attn_drop=cfg.attn_drop_rate)
                for j in range(cfg.depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(cfg.embed_dims[i], eps=cfg.norm_eps))
            cur += cfg.depths[i]
        self.apply(init_weights)


class EDAFormerHead(nn.Module):
    """All-attention decoder (`attn4`, `attn44`, `attn444`, `attn3`, `attn33`, `attn2`, `linear_fuse`, `linear_pred`)."""

    def __init__(self, in_channels: list[int], cfg: EDAFormerConfig):
        super().__init__()
        c2, c3, c4 = in_channels
        h2, h3, h4 = cfg.decoder_heads
        p2, p3, p4 = cfg.decoder_pool_ratios

        def block(dim, heads, pool):
            return EFTBlock(dim, heads, cfg.decoder_mlp_ratio, pool, cfg.decoder_drop_path, 1e-5, relu_ffn=False,
                            post_norm=True)

        self.attn4, self.attn44, self.attn444 = block(c4, h4, p4), block(c4, h4, p4), block(c4, h4, p4)
        self.attn3, self.attn33 = block(c3, h3, p3), block(c3, h3, p3)
        self.attn2 = block(c2, h2, p2)
        self.linear_fuse = ConvBNAct(c2 + c3 + c4, cfg.decoder_dim, 1)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.linear_pred = nn.Conv2d(cfg.decoder_dim, cfg.num_classes, 1)
        self.apply(init_weights)

    def stage_blocks(self) -> list[list[EFTBlock]]:
        """Blocks per decoder stage, in ISR factor order [stage 2, stage 3, stage 4]."""
        return [[self.attn2], [self.attn3, self.attn33], [self.attn4, self.attn44, self.attn444]]

    def forward(self, feats: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
        (c2, h2, w2), (c3, h3, w3), (c4, h4, w4) = feats
        for blk in (self.attn4, self.attn44, self.attn444):
            c4 = blk(c4, h4, w4)
        for blk in (self.attn3, self.attn33):
            c3 = blk(c3, h3, w3)
        c2 = self.attn2(c2, h2, w2)
        _c4 = resize(tokens_to_map(c4, h4, w4), (h2, w2))
        _c3 = resize(tokens_to_map(c3, h3, w3), (h2, w2))
        x = self.linear_fuse(torch.cat([_c4, _c3, tokens_to_map(c2, h2, w2)], dim=1))
        return self.linear_pred(self.dropout(x))


class EDAFormer(nn.Module):
    """EDAFormer = EFT encoder (`backbone`) + all-attention decoder (`decode_head`); logits at 1/8."""

    output_stride = 8

    def __init__(self, cfg: EDAFormerConfig | None = None):
        super().__init__()
        cfg = cfg or EDAFormerConfig()
        self.cfg = cfg
        self.backbone = EFT(cfg)
        self.decode_head = EDAFormerHead(self.backbone.out_channels[1:], cfg)
        self.num_classes = cfg.num_classes

    def set_isr(self, encoder: list[int] | None = None, decoder: list[int] | None = None) -> None:
        """Inference Spatial Reduction: multiply pooling ratios; [1,1,1,1] / [1,1,1] restores the model."""
        self.backbone.set_isr(encoder)
        decoder = [1, 1, 1] if decoder is None else [int(f) for f in decoder]
        if len(decoder) != 3 or min(decoder) < 1:
            raise ValueError(f"ISR decoder factors must be 3 integers >= 1 (stages 2, 3, 4), got {decoder}")
        for f, blocks in zip(decoder, self.decode_head.stage_blocks()):
            for blk in blocks:
                blk.attn.isr = f

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.cfg.in_chans)
        return self.decode_head(self.backbone.forward_tokens(images)[1:])


def build_edaformer(config: dict) -> EDAFormer:
    return EDAFormer(EDAFormerConfig(**config))


def build_eft(config: dict) -> EFT:
    return EFT(EFTConfig(**config))


EFT_CONFIGS = {
    "t": dict(embed_dims=[32, 64, 128, 256], depths=[2, 2, 10, 2], mlp_ratios=[3.8] * 4),
    "b": dict(embed_dims=[64, 128, 256, 512], depths=[3, 3, 22, 3], mlp_ratios=[4.0] * 4),
    "tiny": dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], mlp_ratios=[2.0] * 4),
}
_HEAD = {"t": dict(decoder_dim=128, decoder_mlp_ratio=2.0), "b": dict(decoder_dim=768, decoder_mlp_ratio=1.0),
         "tiny": dict(decoder_dim=16, decoder_mlp_ratio=1.0)}
VARIANTS = {
    f"edaformer-{k}": dict(build=build_edaformer, config_class=EDAFormerConfig, config=dict(v, **_HEAD[k]),
                           description=f"EDAFormer-{k.upper()} (EFT-{k.upper()} + all-attention decoder), ISR-ready")
    for k, v in EFT_CONFIGS.items()
}
VARIANTS.update({
    f"eft-{k}": dict(build=build_eft, config_class=EFTConfig, config=dict(v),
                     description=f"EFT-{k.upper()} encoder (embedding-free attention)")
    for k, v in EFT_CONFIGS.items() if k != "tiny"
})

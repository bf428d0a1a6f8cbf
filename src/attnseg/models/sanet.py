"""SANet: Squeeze-and-Attention Networks for semantic segmentation.

Zhong et al., "Squeeze-and-Attention Networks for Semantic Segmentation", CVPR 2020.

SA module (Sec. 3.2, Eq. 3-4), for an input X_in with C channels:
    X_res  = F(X_in)                                 main branch: conv3x3 (2 groups) -> BN -> ReLU -> conv3x3 -> BN -> ReLU
    X_attn = Up(sigma(F_attn(Pool(X_in))))           attention branch, same conv structure on a pooled input
    X_out  = X_attn * X_res + X_attn
Both branches reduce C to C/4 (`sa_reduction`). Our reading of the points the paper leaves open:
  * Pool is average pooling with window and stride 8 (Eq. 3's "APool"); the implementation section
    mentions max pooling, available as `sa_pool="max"`. ceil_mode keeps every pixel covered.
  * sigma is a sigmoid applied to F_attn's output, so X_attn in (0, 1) "squeezes" and re-weights
    X_res channel- and region-wise while the + X_attn term keeps a residual path.
  * Up is bilinear resizing back to X_res's grid (exactly x8 up to the ceil at the borders).
  * On small backbones C/4 is tiny (EfficientNet-Lite0's 24-channel stage would give 6), so the output
    width is max(C/4, `sa_min_channels`); with ResNet the C/4 rule applies unchanged.

SANet head (Sec. 3.3, Fig. 3): an SA module on each of the four backbone stages. Their outputs are
resized to stage 1's grid, concatenated and classified into the mask prediction Y_mask. A category
branch pools stage 4 globally, predicts per-class presence logits (trained with binary cross-entropy
against the set of classes in the ground truth) and re-weights Y_mask's class channels SE-style
(presence logits -> FC(K, 4) -> ReLU -> FC(4, K) -> sigmoid). A dense FCN head on stage 4 gives Y_den.
The fourth SA head has its own 1x1 classifier Y_SA4, and the prediction is Y = Y_den + Y_SA4.
Loss (Eq. 6): L = L_mask(Y_mask) + alpha * L_cat + beta * L_den(Y), alpha = 0.2, beta = 0.8.
In eval mode the model returns Y only. `predict="mask"` returns the (category re-weighted) mask
prediction instead, and `predict="sum"` their sum; the mask path fuses all four stages at stride 4,
where Y lives at stage 4's stride (16 or 32 on EfficientNet-Lite0, 8 on the dilated ResNets).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNAct, check_images, resize


class SAModule(nn.Module):
    def __init__(self, cin: int, cout: int, pool: int = 8, pool_type: str = "avg"):
        super().__init__()
        if pool_type not in ("avg", "max"):
            raise ValueError(f"sa_pool must be 'avg' or 'max', got {pool_type!r}")
        mid = cout if cout % 2 == 0 else cout + 1
        g = 2 if cin % 2 == 0 and mid % 2 == 0 else 1
        self.pool, self.pool_type = pool, pool_type
        self.conv = nn.Sequential(ConvBNAct(cin, mid, 3, groups=g), ConvBNAct(mid, cout, 3))  # F
        self.conv_attn = nn.Sequential(ConvBNAct(cin, mid, 3, groups=g), ConvBNAct(mid, cout, 3, act=None))  # F_attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_res = self.conv(x)  # X_res = F(X_in)
        pool = F.avg_pool2d if self.pool_type == "avg" else F.max_pool2d
        p = pool(x, self.pool, self.pool, ceil_mode=True)  # Pool(X_in): 1/8 resolution
        x_attn = resize(torch.sigmoid(self.conv_attn(p)), x_res.shape[-2:])  # Up(sigma(F_attn(.)))
        return x_attn * x_res + x_attn  # Eq. 4


class FCNHead(nn.Module):
    """conv3x3 -> BN -> ReLU -> dropout -> 1x1 classifier (the dense / auxiliary head)."""

    def __init__(self, cin: int, mid: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvBNAct(cin, mid, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(mid, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.dropout(self.conv(x)))


@dataclass
class SANetConfig:
    backbone: str = "resnet50-d8"  # resnet50-d8, resnet101-d8, efficientnet-lite0
    backbone_options: dict | None = None
    num_classes: int = 150
    sa_reduction: int = 4
    sa_min_channels: int = 0
    sa_pool: str = "avg"
    sa_pool_size: int = 8
    mask_channels: int = 256  # fuse width after concatenating the SA outputs
    dense_channels: int = 512  # FCN dense head width
    category_mid: int = 4  # SE-style reweighting bottleneck
    alpha: float = 0.2  # category loss weight
    beta: float = 0.8  # dense loss weight
    use_sa: bool = True  # ablation: False replaces every SA module by conv3x3-BN-ReLU (same width)
    use_category: bool = True  # ablation: no category branch / loss
    dropout: float = 0.1
    predict: str = "den_sa4"  # eval output: den_sa4 (Y = Y_den + Y_SA4, as read from the paper) | mask | sum


class SANet(nn.Module):
    def __init__(self, cfg: SANetConfig | None = None):
        super().__init__()
        cfg = cfg or SANetConfig()
        self.cfg = cfg
        from . import create_model

        self.backbone = create_model(cfg.backbone, **(cfg.backbone_options or {}))
        chans = list(self.backbone.out_channels)
        outs = [max(c // cfg.sa_reduction, cfg.sa_min_channels) for c in chans]
        self.sa_heads = nn.ModuleList(
            SAModule(c, o, cfg.sa_pool_size, cfg.sa_pool) if cfg.use_sa else ConvBNAct(c, o, 3)
            for c, o in zip(chans, outs))
        k = cfg.num_classes
        self.mask_fuse = ConvBNAct(sum(outs), cfg.mask_channels, 1)
        self.mask_cls = nn.Sequential(nn.Dropout2d(cfg.dropout), nn.Conv2d(cfg.mask_channels, k, 1))
        self.sa4_cls = nn.Conv2d(outs[-1], k, 1)
        self.dense_head = FCNHead(chans[-1], min(cfg.dense_channels, chans[-1] // 4 or 1) if chans[-1] < 2048
                                  else cfg.dense_channels, k, cfg.dropout)
        if cfg.use_category:
            self.cat_fc = nn.Linear(chans[-1], k)
            self.cat_se = nn.Sequential(nn.Linear(k, cfg.category_mid), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.category_mid, k), nn.Sigmoid())
        self.num_classes = k
        if cfg.predict not in ("den_sa4", "mask", "sum"):
            raise ValueError(f"predict must be den_sa4, mask or sum, got {cfg.predict!r}")

    def forward(self, images: torch.Tensor):
        check_images(images)
        feats = self.backbone(images)
        sa = [head(f) for head, f in zip(self.sa_heads, feats)]
        y_den = self.dense_head(feats[-1])
        y_sa4 = self.sa4_cls(sa[-1])
        size = sa[0].shape[-2:]
        y = resize(y_den, size) + resize(y_sa4, size)  # Y = Y_den + Y_SA4
        if not self.training and self.cfg.predict == "den_sa4":
            return y
        y_mask = self.mask_cls(self.mask_fuse(torch.cat([resize(s, size) for s in sa], 1)))
        out = {"out": y, "mask": y_mask}
        if self.cfg.use_category:
            cat = self.cat_fc(feats[-1].mean((2, 3)))  # per-class presence logits
            out["mask"] = y_mask * self.cat_se(cat)[:, :, None, None]  # SE-style class reweighting
            out["cat"] = cat
        if not self.training:
            return out["mask"] if self.cfg.predict == "mask" else out["mask"] + y
        return out

    def loss(self, out: dict, target: torch.Tensor, pixel_loss) -> tuple[torch.Tensor, dict]:
        """L = L_mask + alpha * L_cat + beta * L_den."""
        l_mask = pixel_loss(out["mask"], target)
        l_den = pixel_loss(out["out"], target)
        total = l_mask + self.cfg.beta * l_den
        parts = {"loss_mask": l_mask.detach(), "loss_den": l_den.detach()}
        if "cat" in out:
            k = self.num_classes
            present = torch.zeros(target.shape[0], k, device=target.device)
            for i, t in enumerate(target):
                v = t[(t >= 0) & (t < k)].unique()
                present[i, v] = 1.0
            l_cat = F.binary_cross_entropy_with_logits(out["cat"], present)
            total = total + self.cfg.alpha * l_cat
            parts["loss_cat"] = l_cat.detach()
        parts["loss"] = total.detach()
        return total, parts


def build_sanet(config: dict) -> SANet:
    return SANet(SANetConfig(**config))


VARIANTS = {
    "sanet-r50": dict(build=build_sanet, config_class=SANetConfig, config=dict(backbone="resnet50-d8"),
                      description="SANet, dilated ResNet-50 (output stride 8)"),
    "sanet-r101": dict(build=build_sanet, config_class=SANetConfig, config=dict(backbone="resnet101-d8"),
                       description="SANet, dilated ResNet-101 (output stride 8)"),
    "sanet-effnet-lite0": dict(
        build=build_sanet, config_class=SANetConfig,
        config=dict(backbone="efficientnet-lite0", backbone_options={"output_stride": 16}, sa_min_channels=32,
                    mask_channels=128, dense_channels=128),
        description="SANet on EfficientNet-Lite0 (packaged ImageNet weights, output stride 16; inputs (x-127)/128)"),
    "sanet-tiny": dict(build=build_sanet, config_class=SANetConfig,
                       config=dict(backbone="efficientnet-lite0", backbone_options={"pretrained": False,
                                                                                    "output_stride": 32},
                                   sa_min_channels=8, mask_channels=16, dense_channels=16),
                       description="small SANet for tests (random EfficientNet-Lite0)"),
}

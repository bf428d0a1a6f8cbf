"""SANet: Squeeze-and-Attention Networks for semantic segmentation.

Zhong et al., "Squeeze-and-Attention Networks for Semantic Segmentation", CVPR 2020. Read beside the
paper (Sec. 3.1-3.3 and its implementation paragraph); each choice below quotes the sentence it reads. The
defaults follow the paper; the shipped model uses other choices, kept as options.

SA module (Sec. 3.2), for an input X_in with C channels:
    X_res  = F(X_in)                       main branch: conv3x3 (2 groups) -> BN -> ReLU -> conv3x3 -> BN -> ReLU
    X^attn = F_attn(APool(X_in))           attention branch: the same convs on a pooled input
    X_attn = Up(sigma(X^attn))             "X_attn = Up(sigma(X^_attn))", and Sec. 3.1 defines sigma = ReLU
                                           (Phi = sigmoid): `attention_act="relu"` (paper) | "sigmoid"
    X_out  = X_attn * X_res + X_attn       (Eq. 4)
  * "we reduce the input channels to a quarter in both the main and the attention branch": width C/4;
    on EfficientNet-Lite0's narrow stages max(C/4, `sa_min_channels`).
  * "we use two groups for the first convolution of the main and attention branches".
  * Pooling and up-sampling ratio 8. Eq. 3 writes APool (average), the implementation paragraph says
    "max pooling": average by default, `sa_pool="max"` for the other reading; ceil_mode covers every pixel.
  * Up is bilinear resizing (the paper does not name the kernel).

SANet (Sec. 3.3, Fig. 3): an SA head on each of the four backbone stages.
  * "we adjust the outputs of the SA heads to the number of classes": each head's X_out goes through a
    1x1 conv to K class-wise masks Y_SA_i (`head_width="classes"`); "we concatenate the outputs of the
    four SA heads": Y_mask = conv1x1(concat(Up(Y_SA_1..4))) (4K -> K). `head_width="reduced"` is the
    shipped model's: C/4-wide outputs fused by conv1x1-BN-ReLU to `mask_channels` and a classifier.
  * The auxiliary (dense) head is an FCN head on stage 4 ("its input comes from the fourth stage of the
    ResNet instead of the usual third"): Y_den. The prediction is "Y^_den + Y^_SA4" (`predict="den_sa4"`).
  * Category prediction: "y^_nj is the average-pooled result of Y_den", trained with binary cross-entropy
    against the classes present (`category_source="dense"`), so L_cat trains the dense head. The shipped
    model used EncNet's SE-loss form: a linear layer on pooled stage-4 features ("backbone"), and
    multiplied Y_mask's class channels by sigmoid(FC-ReLU-FC(category)) (`category_gate=True`); the
    paper has no such gate (its "middle FC = 4" belongs to the SE baseline).
  * Loss (Eq. 6-7): L = L_mask + alpha L_cat + beta L_den, alpha = 0.2, beta = 0.8: "alpha and beta weight
    the category loss and the auxiliary loss", so L_den supervises Y^_den (`dense_loss_on="den"`); the
    shipped model applied it to Y^_den + Y^_SA4 ("den_sa4"). L_mask supervises Y_mask.
In eval mode the model returns the prediction `predict` names: den_sa4 (the paper's), mask, or sum.
Y_mask lives at stage 1's stride (4); Y^_den + Y^_SA4 is computed there too (bilinear).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone
from .layers import ConvBNAct, check_images, resize


class SAModule(nn.Module):
    def __init__(self, cin: int, cout: int, pool: int = 8, pool_type: str = "avg", attention_act: str = "relu"):
        super().__init__()
        if pool_type not in ("avg", "max"):
            raise ValueError(f"sa_pool must be 'avg' or 'max', got {pool_type!r}")
        if attention_act not in ("relu", "sigmoid"):
            raise ValueError(f"attention_act must be 'relu' (the paper's sigma) or 'sigmoid', got {attention_act!r}")
        mid = cout if cout % 2 == 0 else cout + 1
        g = 2 if cin % 2 == 0 and mid % 2 == 0 else 1
        self.pool, self.pool_type, self.attention_act = pool, pool_type, attention_act
        self.conv = nn.Sequential(ConvBNAct(cin, mid, 3, groups=g), ConvBNAct(mid, cout, 3))  # F
        self.conv_attn = nn.Sequential(ConvBNAct(cin, mid, 3, groups=g), ConvBNAct(mid, cout, 3, act=None))  # F_attn
        self.record: list | None = None  # tools/explain.py: X_attn (the attention channels) appended here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_res = self.conv(x)  # X_res = F(X_in)
        pool = F.avg_pool2d if self.pool_type == "avg" else F.max_pool2d
        p = pool(x, self.pool, self.pool, ceil_mode=True)  # Pool(X_in): 1/8 resolution
        x_hat = self.conv_attn(p)  # X^_attn = F_attn(Pool(X_in))
        act = torch.relu if self.attention_act == "relu" else torch.sigmoid
        x_attn = resize(act(x_hat), x_res.shape[-2:])  # X_attn = Up(sigma(X^_attn))
        if self.record is not None:
            self.record.append(x_attn.detach())
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
    mask_channels: int = 256  # head_width="reduced": fuse width after concatenating the SA outputs
    dense_channels: int = 512  # FCN dense head width
    category_mid: int = 4  # category_gate: SE-style bottleneck
    alpha: float = 0.2  # category loss weight
    beta: float = 0.8  # dense loss weight
    use_sa: bool = True  # ablation: False replaces every SA module by conv3x3-BN-ReLU (same width)
    use_category: bool = True  # ablation: no category prediction / loss
    dropout: float = 0.1
    predict: str = "den_sa4"  # eval output: den_sa4 (Y^_den + Y^_SA4, the paper's) | mask | sum
    # the paper's choices (defaults) and the shipped model's (see LEGACY and the module docstring)
    attention_act: str = "relu"  # relu (paper: sigma = ReLU) | sigmoid
    category_source: str = "dense"  # dense (paper: average-pooled Y_den) | backbone (linear on pooled stage 4)
    category_gate: bool = False  # paper: none | True: Y_mask channels x sigmoid(FC-ReLU-FC(category))
    dense_loss_on: str = "den"  # den (paper: L_den on Y^_den) | den_sa4 (on Y^_den + Y^_SA4)
    head_width: str = "classes"  # classes (paper: each SA head -> K masks, concatenated) | reduced


# attnseg's first SANet (the shipped sanet-effnet-lite0-camvid); checkpoints saved before these options
# existed are read with these values, so they load and predict exactly as they did
LEGACY = dict(attention_act="sigmoid", category_source="backbone", category_gate=True, dense_loss_on="den_sa4",
              head_width="reduced")
_CHOICES = dict(attention_act=("relu", "sigmoid"), category_source=("dense", "backbone"),
                dense_loss_on=("den", "den_sa4"), head_width=("classes", "reduced"),
                predict=("den_sa4", "mask", "sum"))


def upgrade_config(cfg: dict) -> dict:
    """A config saved before the paper's options existed (no `head_width`) gets the LEGACY values."""
    return cfg if "head_width" in cfg else {**cfg, **LEGACY}


class SANet(nn.Module):
    def __init__(self, cfg: SANetConfig | None = None):
        super().__init__()
        cfg = cfg or SANetConfig()
        self.cfg = cfg
        for name, ok in _CHOICES.items():
            if getattr(cfg, name) not in ok:
                raise ValueError(f"{name} must be one of {', '.join(ok)}, got {getattr(cfg, name)!r}")
        if cfg.category_gate and not cfg.use_category:
            raise ValueError("category_gate needs use_category=True")
        self.backbone = create_backbone(cfg.backbone, **(cfg.backbone_options or {}))
        chans = list(self.backbone.out_channels)
        outs = [max(c // cfg.sa_reduction, cfg.sa_min_channels) for c in chans]
        self.sa_heads = nn.ModuleList(
            SAModule(c, o, cfg.sa_pool_size, cfg.sa_pool, cfg.attention_act) if cfg.use_sa else ConvBNAct(c, o, 3)
            for c, o in zip(chans, outs))
        k = cfg.num_classes
        if cfg.head_width == "classes":  # each head -> K class-wise masks; Y_mask from their concatenation
            self.sa_cls = nn.ModuleList(nn.Conv2d(o, k, 1) for o in outs)
            self.mask_cls = nn.Sequential(nn.Dropout2d(cfg.dropout), nn.Conv2d(4 * k, k, 1))
        else:
            self.mask_fuse = ConvBNAct(sum(outs), cfg.mask_channels, 1)
            self.mask_cls = nn.Sequential(nn.Dropout2d(cfg.dropout), nn.Conv2d(cfg.mask_channels, k, 1))
            self.sa4_cls = nn.Conv2d(outs[-1], k, 1)
        self.dense_head = FCNHead(chans[-1], min(cfg.dense_channels, chans[-1] // 4 or 1) if chans[-1] < 2048
                                  else cfg.dense_channels, k, cfg.dropout)
        if cfg.use_category and cfg.category_source == "backbone":
            self.cat_fc = nn.Linear(chans[-1], k)
        if cfg.category_gate:
            self.cat_se = nn.Sequential(nn.Linear(k, cfg.category_mid), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.category_mid, k), nn.Sigmoid())
        self.num_classes = k

    def forward(self, images: torch.Tensor):
        check_images(images)
        cfg = self.cfg
        feats = self.backbone(images)
        sa = [head(f) for head, f in zip(self.sa_heads, feats)]
        y_den = self.dense_head(feats[-1])  # Y^_den (stage-4 stride)
        size = sa[0].shape[-2:]
        if cfg.head_width == "classes":
            masks = [cls(s) for cls, s in zip(self.sa_cls, sa)]  # Y_SA_1..4: K class-wise masks each
            y_sa4 = masks[-1]
        else:
            y_sa4 = self.sa4_cls(sa[-1])
        y = resize(y_den, size) + resize(y_sa4, size)  # Y = Y^_den + Y^_SA4
        if not self.training and cfg.predict == "den_sa4":
            return y
        if cfg.head_width == "classes":
            y_mask = self.mask_cls(torch.cat([resize(m, size) for m in masks], 1))
        else:
            y_mask = self.mask_cls(self.mask_fuse(torch.cat([resize(s, size) for s in sa], 1)))
        out = {"out": y, "den": y_den, "mask": y_mask}
        if cfg.use_category:
            # y^_nj: the average-pooled Y_den (paper) or EncNet's linear layer on pooled stage-4 features
            cat = y_den.mean((2, 3)) if cfg.category_source == "dense" else self.cat_fc(feats[-1].mean((2, 3)))
            out["cat"] = cat
            if cfg.category_gate:
                out["mask"] = y_mask * self.cat_se(cat)[:, :, None, None]
        if not self.training:
            return out["mask"] if cfg.predict == "mask" else out["mask"] + y
        return out

    def loss(self, out: dict, target: torch.Tensor, pixel_loss) -> tuple[torch.Tensor, dict]:
        """L = L_mask(Y_mask) + alpha * L_cat(y^) + beta * L_den(Y^_den) (Eq. 6-7)."""
        l_mask = pixel_loss(out["mask"], target)
        l_den = pixel_loss(out["den"] if self.cfg.dense_loss_on == "den" else out["out"], target)
        total = l_mask + self.cfg.beta * l_den
        parts = {"loss_mask": l_mask.detach(), "loss_den": l_den.detach()}
        if "cat" in out:
            y = presence(target, self.num_classes, dtype=out["cat"].dtype)  # y_nj in the logits' dtype
            l_cat = F.binary_cross_entropy_with_logits(out["cat"], y)
            total = total + self.cfg.alpha * l_cat
            parts["loss_cat"] = l_cat.detach()
        parts["loss"] = total.detach()
        return total, parts


def presence(target: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, K) targets y_nj: 1 where class j appears in image n's ground truth (ignore pixels excluded), in
    `dtype` (the category logits': a float64 model computes L_cat in float64) on the target's device."""
    present = torch.zeros(target.shape[0], k, dtype=dtype, device=target.device)
    for i, t in enumerate(target):
        present[i, t[(t >= 0) & (t < k)].unique()] = 1.0
    return present


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
    "sanet-effnet-lite2": dict(
        build=build_sanet, config_class=SANetConfig,
        config=dict(backbone="efficientnet-lite2", backbone_options={"output_stride": 16}, sa_min_channels=32,
                    mask_channels=128, dense_channels=128),
        description="SANet on EfficientNet-Lite2 (packaged ImageNet weights, the lite12 extra; output stride 16)"),
    "sanet-tiny": dict(build=build_sanet, config_class=SANetConfig,
                       config=dict(backbone="efficientnet-lite0", backbone_options={"pretrained": False,
                                                                                    "output_stride": 32},
                                   sa_min_channels=8, mask_channels=16, dense_channels=16),
                       description="small SANet for tests (random EfficientNet-Lite0)"),
}

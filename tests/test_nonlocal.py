"""Non-local blocks against the implementations the paper's code cites, on their own key layouts.

References are written here on raw tensors in each source's key names and layer order (the paper's
Fig. 2; AlexHex7/Non-local_pytorch `lib/non_local_*.py`; mmcv `cnn/bricks/non_local.py`), not through
attnseg modules: sub-sampling max-pools the *outputs* of g and phi (gaussian: x, for phi). Weights move
into attnseg through `convert/nonlocal_blocks.py`'s key maps. Every mode x dim x sub-sampling x BN, on
non-square inputs, in float32 (1e-5) and float64 (1e-9). mmsegmentation NLNet-R50 checkpoints load with
`load_model(..., model="nlnet-r50")` and match a reference forward of mmseg's layer order.
"""

import pytest
import torch
import torch.nn.functional as F

import attnseg
from attnseg.checkpoint.formats.nlnet import load_nonlocal_weights
from attnseg.models.nonlocal_block import MODES, NonLocal1d, NonLocal2d, NonLocal3d

NL = {1: NonLocal1d, 2: NonLocal2d, 3: NonLocal3d}
SHAPES = {1: (2, 8, 14), 2: (2, 8, 6, 10), 3: (2, 8, 4, 6, 8)}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
POOL = {1: lambda t: F.max_pool1d(t, 2), 2: lambda t: F.max_pool2d(t, (2, 2)),
        3: lambda t: F.max_pool3d(t, (1, 2, 2))}


def source_state_dict(layout, mode, dim, sub, bn, c=8, seed=0, dtype=torch.float32):
    """Random weights (and BN statistics) under the source's own key names."""
    g = torch.Generator().manual_seed(seed)
    inter = c // 2
    k = (1,) * dim
    sd = {}

    def put(name, *shape, positive=False):
        t = torch.rand(*shape, generator=g) + 0.5 if positive else torch.randn(*shape, generator=g) * 0.4
        sd[name] = t.to(dtype)

    def conv(role, cin, cout, pooled, bias=True):
        if layout == "alexhex7":
            name = f"{role}.0" if pooled else role
        else:
            name = f"{role}.0.conv" if pooled else f"{role}.conv"
        put(f"{name}.weight", cout, cin, *k)
        if bias:
            put(f"{name}.bias", cout)

    conv("g", c, inter, sub)
    if mode != "gaussian":
        conv("theta", c, inter, False)
        conv("phi", c, inter, sub)
    if mode == "concatenation":
        sd["concat_project.0.weight" if layout == "alexhex7" else "concat_project.conv.weight"] = (
            torch.randn(1, 2 * inter, 1, 1, generator=g) * 0.4).to(dtype)
    if layout == "alexhex7":
        out, norm = ("W.0", "W.1") if bn else ("W", None)
        put(f"{out}.weight", c, inter, *k)
        put(f"{out}.bias", c)
    else:
        out, norm = "conv_out.conv", "conv_out.bn" if bn else None
        put(f"{out}.weight", c, inter, *k)
        if not bn:
            put(f"{out}.bias", c)  # ConvModule: bias only without a norm layer
    if norm:
        put(f"{norm}.weight", c, positive=True)
        put(f"{norm}.bias", c)
        put(f"{norm}.running_mean", c)
        put(f"{norm}.running_var", c, positive=True)
        sd[f"{norm}.num_batches_tracked"] = torch.tensor(3)
    return sd


def reference(sd, x, layout, mode, dim, sub, bn, use_scale):
    """The source's forward on its own keys: z = W(y) + x, y = (f / C) g, pooling after g and phi."""
    w = sd.get
    conv = CONV[dim]
    pool = POOL[dim] if sub else (lambda t: t)
    B, C = x.shape[:2]
    name = (lambda role, pooled: f"{role}.0" if pooled else role) if layout == "alexhex7" else \
        (lambda role, pooled: f"{role}.0.conv" if pooled else f"{role}.conv")

    def c1(role, t, pooled=False):
        n = name(role, pooled)
        return conv(t, sd[f"{n}.weight"], w(f"{n}.bias"))

    g_x = pool(c1("g", x, sub)).flatten(2).permute(0, 2, 1)  # (B, M, C')
    inter = g_x.shape[-1]
    if mode == "gaussian":
        theta_x = x.reshape(B, C, -1).permute(0, 2, 1)
        phi_x = pool(x).reshape(B, C, -1)
    else:
        theta_x = c1("theta", x).reshape(B, inter, -1).permute(0, 2, 1)
        phi_x = pool(c1("phi", x, sub)).reshape(B, inter, -1)
    if mode == "concatenation":  # [theta_i; phi_j] for every pair, 1x1 conv + ReLU, / N
        h, wdt = theta_x.shape[1], phi_x.shape[2]
        t = theta_x.permute(0, 2, 1)[..., None].expand(-1, -1, -1, wdt)
        p = phi_x[:, :, None, :].expand(-1, -1, h, -1)
        proj = sd["concat_project.0.weight" if layout == "alexhex7" else "concat_project.conv.weight"]
        f = F.relu(F.conv2d(torch.cat([t, p], 1), proj))[:, 0]
        f = f / f.shape[-1]
    else:
        f = theta_x @ phi_x
        if mode == "dot_product":
            f = f / f.shape[-1]
        else:
            if use_scale:
                f = f / theta_x.shape[-1] ** 0.5
            f = f.softmax(-1)
    y = (f @ g_x).permute(0, 2, 1).reshape(B, inter, *x.shape[2:])
    out = ("W.0" if bn else "W") if layout == "alexhex7" else "conv_out.conv"
    z = conv(y, sd[f"{out}.weight"], w(f"{out}.bias"))
    if bn:
        n = "W.1" if layout == "alexhex7" else "conv_out.bn"
        z = F.batch_norm(z, sd[f"{n}.running_mean"], sd[f"{n}.running_var"], sd[f"{n}.weight"], sd[f"{n}.bias"],
                         False, 0.0, 1e-5)
    return z + x


@pytest.mark.parametrize("layout", ["alexhex7", "mmcv"])
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sub", [False, True])
@pytest.mark.parametrize("bn", [False, True])
def test_block_matches_the_source_on_its_weights(layout, dim, mode, sub, bn):
    use_scale = layout == "mmcv" and mode == "embedded_gaussian"  # mmcv's default; the cited code has none
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-9)):
        sd = source_state_dict(layout, mode, dim, sub, bn, dtype=dtype)
        x = torch.randn(*SHAPES[dim], generator=torch.Generator().manual_seed(1)).to(dtype)
        blk = NL[dim](8, mode=mode, sub_sample=sub, use_bn=bn, use_scale=use_scale).to(dtype).eval()
        load_nonlocal_weights(blk, sd)
        with torch.no_grad():
            want = reference(sd, x, layout, mode, dim, sub, bn, use_scale)
            got = blk(x)
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err <= tol, (dtype, err)


def test_pooling_x_first_is_a_different_function():
    """The order matters: the same weights with x pooled before phi and g differ (what the fix fixed)."""
    sd = source_state_dict("alexhex7", "embedded_gaussian", 2, True, True, dtype=torch.float64)
    x = torch.randn(*SHAPES[2], dtype=torch.float64)
    right = reference(sd, x, "alexhex7", "embedded_gaussian", 2, True, True, False)
    wrong_sd = {k.replace("g.0.", "g.").replace("phi.0.", "phi."): v for k, v in sd.items()}
    xs = F.max_pool2d(x, 2)
    theta = F.conv2d(x, wrong_sd["theta.weight"], wrong_sd["theta.bias"]).flatten(2).transpose(1, 2)
    phi = F.conv2d(xs, wrong_sd["phi.weight"], wrong_sd["phi.bias"]).flatten(2)
    g = F.conv2d(xs, wrong_sd["g.weight"], wrong_sd["g.bias"]).flatten(2).transpose(1, 2)
    y = ((theta @ phi).softmax(-1) @ g).transpose(1, 2).reshape(2, 4, 6, 10)
    z = F.conv2d(y, sd["W.0.weight"], sd["W.0.bias"])
    z = F.batch_norm(z, sd["W.1.running_mean"], sd["W.1.running_var"], sd["W.1.weight"], sd["W.1.bias"], False, 0.0,
                     1e-5) + x
    assert (z - right).abs().max() > 1e-2  # x pooled before the convolutions: not the paper's block
    blk = NonLocal2d(8, mode="embedded_gaussian", sub_sample=True).double().eval()
    load_nonlocal_weights(blk, sd)
    assert torch.allclose(blk(x), right, atol=1e-9)


def test_leftover_keys_are_named():
    sd = source_state_dict("mmcv", "embedded_gaussian", 2, False, True)
    sd["mystery.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="mystery.weight"):
        load_nonlocal_weights(NonLocal2d(8, use_scale=True), sd)


# -- mmsegmentation NLNet ---------------------------------------------------------------------------------

def mmseg_nlnet_state_dict(num_classes=7, channels=32, aux=16, seed=0, depths=(3, 4, 6, 3)):
    """Random weights in mmsegmentation's NLNet layout (ResNetV1c-D8 + NLHead + FCN auxiliary head)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cout, cin, k, scale=None):
        sd[name] = torch.randn(cout, cin, k, k, generator=g) * (scale or (2.0 / (cin * k * k)) ** 0.5)

    def bn(name, c):
        sd[name + ".weight"] = torch.rand(c, generator=g) * 0.5 + 0.5
        sd[name + ".bias"] = torch.randn(c, generator=g) * 0.1
        sd[name + ".running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[name + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".num_batches_tracked"] = torch.tensor(10)

    for i, (cin, cout) in zip((0, 3, 6), ((3, 32), (32, 32), (32, 64))):
        conv(f"backbone.stem.{i}.weight", cout, cin, 3)
        bn(f"backbone.stem.{i + 1}", cout)
    cin = 64
    for s, n in enumerate(depths):
        width = 64 * 2 ** s
        for b in range(n):
            p = f"backbone.layer{s + 1}.{b}."
            conv(p + "conv1.weight", width, cin, 1), bn(p + "bn1", width)
            conv(p + "conv2.weight", width, width, 3), bn(p + "bn2", width)
            conv(p + "conv3.weight", width * 4, width, 1, scale=0.02), bn(p + "bn3", width * 4)
            if b == 0:
                conv(p + "downsample.0.weight", width * 4, cin, 1), bn(p + "downsample.1", width * 4)
            cin = width * 4
    h = "decode_head."
    conv(h + "convs.0.conv.weight", channels, 2048, 3), bn(h + "convs.0.bn", channels)
    inter = channels // 2
    for role in ("g", "theta", "phi"):
        conv(h + f"nl_block.{role}.conv.weight", inter, channels, 1)
        sd[h + f"nl_block.{role}.conv.bias"] = torch.randn(inter, generator=g) * 0.1
    conv(h + "nl_block.conv_out.conv.weight", channels, inter, 1), bn(h + "nl_block.conv_out.bn", channels)
    conv(h + "convs.1.conv.weight", channels, channels, 3), bn(h + "convs.1.bn", channels)
    conv(h + "conv_cat.conv.weight", channels, 2048 + channels, 3), bn(h + "conv_cat.bn", channels)
    conv(h + "conv_seg.weight", num_classes, channels, 1)
    sd[h + "conv_seg.bias"] = torch.randn(num_classes, generator=g) * 0.1
    conv("auxiliary_head.convs.0.conv.weight", aux, 1024, 3), bn("auxiliary_head.convs.0.bn", aux)
    conv("auxiliary_head.conv_seg.weight", num_classes, aux, 1)
    sd["auxiliary_head.conv_seg.bias"] = torch.zeros(num_classes)
    return sd


def mmseg_nlnet_reference(sd, x, depths=(3, 4, 6, 3)):
    """mmseg's order: ResNetV1c (deep stem, max-pool, strides 1,2,1,1, dilations 1,1,2,4 with the first block of a
    dilated stage at half: contract_dilation) -> NLHead: convs.0 -> NonLocal2d (embedded gaussian, use_scale,
    reduction 2) -> convs.1 -> conv_cat([x, y]) -> dropout (eval: identity) -> conv_seg."""
    def cbr(t, conv, bn, stride=1, pad=0, dil=1, relu=True):
        t = F.conv2d(t, sd[conv], sd.get(conv.replace("weight", "bias")) if conv.endswith("conv_seg.weight") else None,
                     stride, pad, dil)
        t = F.batch_norm(t, sd[bn + ".running_mean"], sd[bn + ".running_var"], sd[bn + ".weight"], sd[bn + ".bias"],
                         False, 0.0, 1e-5)
        return F.relu(t) if relu else t

    t = cbr(x, "backbone.stem.0.weight", "backbone.stem.1", 2, 1)
    t = cbr(t, "backbone.stem.3.weight", "backbone.stem.4", 1, 1)
    t = cbr(t, "backbone.stem.6.weight", "backbone.stem.7", 1, 1)
    t = F.max_pool2d(t, 3, 2, 1)
    feats = []
    for s, (n, stride, dil) in enumerate(zip(depths, (1, 2, 1, 1), (1, 1, 2, 4))):
        for b in range(n):
            p = f"backbone.layer{s + 1}."f"{b}."
            st = stride if b == 0 else 1
            d = (dil // 2 if dil > 1 else 1) if b == 0 else dil
            idt = t
            y = cbr(t, p + "conv1.weight", p + "bn1")
            y = cbr(y, p + "conv2.weight", p + "bn2", st, d, d)
            y = cbr(y, p + "conv3.weight", p + "bn3", relu=False)
            if b == 0:
                idt = cbr(t, p + "downsample.0.weight", p + "downsample.1", st, relu=False)
            t = F.relu(y + idt)
        feats.append(t)
    h = "decode_head."
    inp = feats[3]
    o = cbr(inp, h + "convs.0.conv.weight", h + "convs.0.bn", pad=1)
    B, C, H, W = o.shape
    nl = h + "nl_block."
    g_x = F.conv2d(o, sd[nl + "g.conv.weight"], sd[nl + "g.conv.bias"]).reshape(B, C // 2, -1).permute(0, 2, 1)
    th = F.conv2d(o, sd[nl + "theta.conv.weight"], sd[nl + "theta.conv.bias"]).reshape(B, C // 2, -1).permute(0, 2, 1)
    ph = F.conv2d(o, sd[nl + "phi.conv.weight"], sd[nl + "phi.conv.bias"]).reshape(B, C // 2, -1)
    f = ((th @ ph) / th.shape[-1] ** 0.5).softmax(-1)
    y = (f @ g_x).permute(0, 2, 1).reshape(B, C // 2, H, W)
    o = o + cbr(y, nl + "conv_out.conv.weight", nl + "conv_out.bn", relu=False)
    o = cbr(o, h + "convs.1.conv.weight", h + "convs.1.bn", pad=1)
    o = cbr(torch.cat([inp, o], 1), h + "conv_cat.conv.weight", h + "conv_cat.bn", pad=1)
    return F.conv2d(o, sd[h + "conv_seg.weight"], sd[h + "conv_seg.bias"])


def test_mmseg_nlnet_r50_checkpoint_loads_and_matches(tmp_path):
    sd = mmseg_nlnet_state_dict()
    path = tmp_path / "nonlocal_r50-d8_512x1024_80k_cityscapes.pth"
    torch.save({"meta": {"CLASSES": None}, "state_dict": sd}, path)
    model = attnseg.load_model(path, model="nlnet-r50")
    assert model.config["num_classes"] == 7 and model.config["channels"] == 32 and model.config["aux_channels"] == 16
    x = torch.randn(1, 3, 72, 104, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = mmseg_nlnet_reference(sd, x)
        got = model(x)
    assert got.shape == want.shape == (1, 7, 9, 13)
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        want64 = mmseg_nlnet_reference(sd64, x.double())
        got64 = model.double()(x.double())
    assert ((got64 - want64).abs().max() / want64.abs().max()).item() < 1e-9
    sd["decode_head.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="decode_head.extra.weight"):
        attnseg.load_model(tmp_path / "bad.pth", model="nlnet-r50")

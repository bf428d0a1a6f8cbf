"""EDAFormer: official key layout loads strict; outputs equal a functional re-computation written
here from the paper's equations; ISR; FLOPs against the papers' tables."""
import pytest
import torch
import torch.nn.functional as F

import attnseg
from attnseg.models import MODELS
from attnseg.analysis.flops import count_flops
from tests.conftest import randomize_bn


def reference_forward(sd, x, cfg):
    """EDAFormer from its equations, reading the official key names directly (no attnseg modules)."""

    def ln(t, p, eps):
        return F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)

    def lin(t, p):
        return t @ sd[p + ".weight"].T + sd[p + ".bias"]

    def efa(t, p, H, W, heads, r, decoder):
        B, N, C = t.shape
        d = C // heads
        m = t.transpose(1, 2).reshape(B, C, H, W)
        if r > 1:
            m = F.avg_pool2d(m, r, r)  # AvgPool_r
        m = F.conv2d(m, sd[p + ".sr.weight"], sd[p + ".sr.bias"])  # Conv1x1
        kv = m.flatten(2).transpose(1, 2)
        if decoder:
            kv = F.gelu(ln(kv, p + ".norm", 1e-5))
        q = t.reshape(B, N, heads, d).permute(0, 2, 1, 3)  # Q = x
        k = kv.reshape(B, -1, heads, d).permute(0, 2, 1, 3)  # K = V = X_r
        a = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
        return lin((a @ k).transpose(1, 2).reshape(B, N, C), p + ".proj")

    def ffn(t, p, H, W, relu):
        h = lin(t, p + ".fc1")
        if relu:
            h = torch.relu(h)
        B, N, C = h.shape
        h = F.conv2d(h.transpose(1, 2).reshape(B, C, H, W), sd[p + ".dwconv.dwconv.weight"],
                     sd[p + ".dwconv.dwconv.bias"], padding=1, groups=C).flatten(2).transpose(1, 2)
        return lin(F.gelu(h), p + ".fc2")

    def block(t, p, H, W, heads, r, eps, decoder):
        t = t + efa(ln(t, p + ".norm1", eps), p + ".attn", H, W, heads, r, decoder)
        return t + ffn(ln(t, p + ".norm2", eps), p + ".mlp", H, W, relu=not decoder)

    feats = []
    for i in range(4):
        k, s = (7, 4) if i == 0 else (3, 2)
        x = F.conv2d(x, sd[f"backbone.patch_embed{i + 1}.proj.weight"], sd[f"backbone.patch_embed{i + 1}.proj.bias"],
                     stride=s, padding=k // 2)
        B, C, H, W = x.shape
        t = ln(x.flatten(2).transpose(1, 2), f"backbone.patch_embed{i + 1}.norm", 1e-5)
        for j in range(cfg["depths"][i]):
            t = block(t, f"backbone.block{i + 1}.{j}", H, W, cfg["num_heads"][i], [8, 4, 2, 1][i], 1e-6, False)
        t = ln(t, f"backbone.norm{i + 1}", 1e-6)
        x = t.transpose(1, 2).reshape(B, C, H, W)
        feats.append((t, H, W))
    (c2, h2, w2), (c3, h3, w3), (c4, h4, w4) = feats[1:]
    for name in ("attn4", "attn44", "attn444"):
        c4 = block(c4, f"decode_head.{name}", h4, w4, 8, 1, 1e-5, True)
    for name in ("attn3", "attn33"):
        c3 = block(c3, f"decode_head.{name}", h3, w3, 4, 2, 1e-5, True)
    c2 = block(c2, "decode_head.attn2", h2, w2, 2, 4, 1e-5, True)

    def to_map(t, H, W):
        return t.transpose(1, 2).reshape(t.shape[0], -1, H, W)

    up = lambda m: F.interpolate(m, size=(h2, w2), mode="bilinear", align_corners=False)  # noqa: E731
    z = torch.cat([up(to_map(c4, h4, w4)), up(to_map(c3, h3, w3)), to_map(c2, h2, w2)], 1)
    z = F.conv2d(z, sd["decode_head.linear_fuse.conv.weight"])
    bn = "decode_head.linear_fuse.bn."
    z = F.batch_norm(z, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"], sd[bn + "bias"], False,
                     0.0, 1e-5)
    return F.conv2d(torch.relu(z), sd["decode_head.linear_pred.weight"], sd["decode_head.linear_pred.bias"])


@pytest.mark.parametrize("variant", ["edaformer-t", "edaformer-b"])
def test_official_layout_loads_strict_and_matches_equations(tmp_path, variant):
    torch.manual_seed(0)
    src = attnseg.create_model(variant, num_classes=19)
    randomize_bn(src)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["decode_head.conv_seg.weight"] = torch.randn(19, 128, 1, 1)  # mmseg 0.x BaseDecodeHead leftover
    sd["decode_head.conv_seg.bias"] = torch.randn(19)
    torch.save({"state_dict": sd, "meta": {"CLASSES": None}}, tmp_path / "official.pth")
    model = attnseg.load_model(tmp_path / "official.pth", model=variant)
    assert model.num_classes == 19
    x = torch.randn(1, 3, 96, 136)
    with torch.no_grad():
        got = model(x)
        want = reference_forward(sd, x, model.config)
    assert got.shape == want.shape == (1, 19, 12, 17)
    assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())
    # float64: the same weights upcast, compared at 1e-9 (a wrong epsilon would show here, not above)
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd64, "meta": {"CLASSES": None}}, tmp_path / "official64.pth")
    model64 = attnseg.load_model(tmp_path / "official64.pth", model=variant, dtype=torch.float64)
    assert model64.config["decoder_dim"] == model.config["decoder_dim"]  # read from linear_fuse
    with torch.no_grad():
        got64, want64 = model64(x.double()), reference_forward(sd64, x.double(), model.config)
    assert ((got64 - want64).abs().max() / want64.abs().max()).item() <= 1e-9


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith(("edaformer", "eft"))])
def test_variants_forward_backward_odd_sizes(name):
    torch.manual_seed(0)
    kw = {"num_classes": 5} if name.startswith("edaformer") else {}
    if name.endswith("-b"):
        kw["depths"] = [1, 1, 2, 1]
    m = attnseg.create_model(name, **kw).train()
    for size in [(97, 131), (70, 45)]:  # not divisible by the pooling ratios
        out = m(torch.randn(2, 3, *size))
        loss = out.square().mean() if torch.is_tensor(out) else sum(o.square().mean() for o in out)
        loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing


def test_isr_changes_output_and_reset_is_bit_identical():
    torch.manual_seed(0)
    m = attnseg.create_model("edaformer-tiny", num_classes=4).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        a = m(x)
        m.set_isr(encoder=[2, 2, 1, 1], decoder=[2, 2, 2])
        b = m(x)
        m.set_isr(encoder=[1, 1, 1, 1], decoder=[1, 1, 1])
        c = m(x)
        m.set_isr(encoder=[16, 16, 16, 16], decoder=[16, 16, 16])  # windows larger than the grids: clipped
        assert torch.isfinite(m(x)).all()
    assert not torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="3 integers"):
        m.set_isr(decoder=[2, 2])


def test_flops_match_paper_tables():
    # papers (512x512, 150 classes): SegFormer-B0 8.4 / 3.8M, B2 62.4 / 27.5M, EDAFormer-T 5.6 / 4.9M
    for name, gmacs, params in [("segformer-b0", 8.4, 3.8), ("segformer-b2", 62.4, 27.5), ("edaformer-t", 5.6, 4.9)]:
        r = count_flops(attnseg.create_model(name, num_classes=150), (512, 512))
        assert abs(r["gmacs"] / gmacs - 1) < 0.05, (name, r["gmacs"])
        assert abs(r["params_m"] / params - 1) < 0.05, (name, r["params_m"])


def test_isr_cuts_edaformer_flops_at_cityscapes_size():
    m = attnseg.create_model("edaformer-t", num_classes=19)
    base = count_flops(m, (1024, 2048))["gmacs"]
    m.set_isr(encoder=[2, 2, 1, 1], decoder=[2, 2, 2])
    assert count_flops(m, (1024, 2048))["gmacs"] <= 0.75 * base


def test_attention_flop_formula_is_counted():
    from torch.utils.flop_counter import FlopCounterMode

    from attnseg.analysis.flops import _custom_mapping

    q, k = torch.randn(2, 3, 50, 8), torch.randn(2, 3, 20, 8)
    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as c:
        F.scaled_dot_product_attention(q, k, k)
    assert c.get_total_flops() == 2 * (2 * 3 * 50 * 20 * 8) * 2


def test_every_attention_path_equals_plain_softmax_formula():
    """MiT's efficient self-attention and EDAFormer's EFA (SDPA inside) against softmax(q k^T / sqrt(d)) v."""
    from attnseg.models.edaformer import EFA
    from attnseg.models.mit import Attention

    torch.manual_seed(0)
    B, H, W, C, heads = 2, 12, 10, 16, 4
    x = torch.randn(B, H * W, C)
    d = C // heads
    att = Attention(C, heads, sr_ratio=2, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, sr_norm_eps=1e-5).eval()
    with torch.no_grad():
        q = (x @ att.q.weight.T + att.q.bias).view(B, -1, heads, d).transpose(1, 2)
        m = F.conv2d(x.transpose(1, 2).reshape(B, C, H, W), att.sr.weight, att.sr.bias, stride=2)
        r = F.layer_norm(m.flatten(2).transpose(1, 2), (C,), att.norm.weight, att.norm.bias, 1e-5)
        kv = (r @ att.kv.weight.T + att.kv.bias).view(B, -1, 2, heads, d)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        o = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1) @ v
        want = o.transpose(1, 2).reshape(B, -1, C) @ att.proj.weight.T + att.proj.bias
        assert torch.allclose(att(x, H, W), want, atol=1e-5)
        efa = EFA(C, heads, pool_ratio=2, post_norm=True).eval()
        m = F.conv2d(F.avg_pool2d(x.transpose(1, 2).reshape(B, C, H, W), 2), efa.sr.weight, efa.sr.bias)
        kv = F.gelu(F.layer_norm(m.flatten(2).transpose(1, 2), (C,), efa.norm.weight, efa.norm.bias, 1e-5))
        q, k = x.view(B, -1, heads, d).transpose(1, 2), kv.view(B, -1, heads, d).transpose(1, 2)
        o = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1) @ k
        want = o.transpose(1, 2).reshape(B, -1, C) @ efa.proj.weight.T + efa.proj.bias
        assert torch.allclose(efa(x, H, W), want, atol=1e-5)

"""mmsegmentation 1.x SegFormer checkpoints, B0-B5 as mmsegmentation trains them (a 256-channel head for
every size: its B1-B5 configs inherit `channels=256` and change only `in_channels`).

The state dicts are written here from mmsegmentation's key layout and its MiT configs, and the reference
forward is written from its layer order (`MixVisionTransformer`, `EfficientMultiheadAttention` on
`nn.MultiheadAttention`, `MixFFN`, `SegformerHead`: conv -> resize -> concat c1..c4 -> fusion_conv ->
conv_seg), not through attnseg code. Compared in float32 (1e-5) and float64 (1e-9); a reference with one
LayerNorm epsilon wrong (1e-5 for 1e-6) must fail the float64 comparison.
"""
import pytest
import torch
import torch.nn.functional as F

import attnseg
from attnseg.checkpoint import ModelLoadError

# mmsegmentation's mit_b* configs: embed_dims (stage 1), num_layers; num_heads [1, 2, 5, 8] for all
MMSEG_MIT = {"b0": (32, [2, 2, 2, 2]), "b1": (64, [2, 2, 2, 2]), "b2": (64, [3, 4, 6, 3]),
             "b3": (64, [3, 4, 18, 3]), "b4": (64, [3, 8, 27, 3]), "b5": (64, [3, 6, 40, 3])}
HEADS, SR, PATCH, STRIDE = [1, 2, 5, 8], [8, 4, 2, 1], [7, 3, 3, 3], [4, 2, 2, 2]


def mmseg_state_dict(size, depths=None, num_classes=9, channels=256, seed=0, dtype=torch.float64):
    base, layers = MMSEG_MIT[size]
    depths = depths or layers
    dims = [base * h for h in HEADS]
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def put(k, *shape, scale=0.1, offset=0.0):
        sd[k] = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)

    def ln(k, c):
        put(k + ".weight", c, offset=1.0), put(k + ".bias", c)

    cin = 3
    for i, (c, n) in enumerate(zip(dims, depths)):
        L = f"backbone.layers.{i}."
        put(L + "0.projection.weight", c, cin, PATCH[i], PATCH[i], scale=(1 / (cin * PATCH[i] ** 2)) ** 0.5)
        put(L + "0.projection.bias", c)
        ln(L + "0.norm", c)
        for j in range(n):
            b = f"{L}1.{j}."
            ln(b + "norm1", c)
            put(b + "attn.attn.in_proj_weight", 3 * c, c, scale=c ** -0.5), put(b + "attn.attn.in_proj_bias", 3 * c)
            put(b + "attn.attn.out_proj.weight", c, c, scale=c ** -0.5), put(b + "attn.attn.out_proj.bias", c)
            if SR[i] > 1:
                put(b + "attn.sr.weight", c, c, SR[i], SR[i], scale=(1 / (c * SR[i] ** 2)) ** 0.5)
                put(b + "attn.sr.bias", c)
                ln(b + "attn.norm", c)
            ln(b + "norm2", c)
            put(b + "ffn.layers.0.weight", 4 * c, c, 1, 1, scale=c ** -0.5), put(b + "ffn.layers.0.bias", 4 * c)
            put(b + "ffn.layers.1.weight", 4 * c, 1, 3, 3, scale=1 / 3), put(b + "ffn.layers.1.bias", 4 * c)
            put(b + "ffn.layers.4.weight", c, 4 * c, 1, 1, scale=(4 * c) ** -0.5), put(b + "ffn.layers.4.bias", c)
        ln(L + "2", c)
        cin = c

    def bn(k, ch):
        put(k + ".weight", ch, offset=1.0), put(k + ".bias", ch), put(k + ".running_mean", ch)
        sd[k + ".running_var"] = (torch.rand(ch, generator=g, dtype=torch.float64) + 0.5).to(dtype)
        sd[k + ".num_batches_tracked"] = torch.tensor(5)

    for i, c in enumerate(dims):
        put(f"decode_head.convs.{i}.conv.weight", channels, c, 1, 1, scale=c ** -0.5)
        bn(f"decode_head.convs.{i}.bn", channels)
    put("decode_head.fusion_conv.conv.weight", channels, 4 * channels, 1, 1, scale=(4 * channels) ** -0.5)
    bn("decode_head.fusion_conv.bn", channels)
    put("decode_head.conv_seg.weight", num_classes, channels, 1, 1, scale=channels ** -0.5)
    put("decode_head.conv_seg.bias", num_classes)
    return sd, dims, depths


def mmseg_reference(sd, x, dims, depths, eps=1e-6, wrong_eps_at=None):
    """mmsegmentation 1.x SegFormer forward on its own keys (`wrong_eps_at`: one LayerNorm given eps 1e-5)."""
    def ln(t, k):
        e = 1e-5 if k == wrong_eps_at else eps
        return F.layer_norm(t, t.shape[-1:], sd[k + ".weight"], sd[k + ".bias"], e)

    feats = []
    t = x
    for i, (c, n) in enumerate(zip(dims, depths)):
        L = f"backbone.layers.{i}."
        t = F.conv2d(t, sd[L + "0.projection.weight"], sd[L + "0.projection.bias"], STRIDE[i], PATCH[i] // 2)
        B, _, H, W = t.shape
        tok = ln(t.flatten(2).transpose(1, 2), L + "0.norm")
        for j in range(n):
            b = f"{L}1.{j}."
            q_in = ln(tok, b + "norm1")
            kv_in = q_in
            if SR[i] > 1:
                m = q_in.transpose(1, 2).reshape(B, c, H, W)
                m = F.conv2d(m, sd[b + "attn.sr.weight"], sd[b + "attn.sr.bias"], SR[i])
                kv_in = ln(m.flatten(2).transpose(1, 2), b + "attn.norm")
            w_in, b_in = sd[b + "attn.attn.in_proj_weight"], sd[b + "attn.attn.in_proj_bias"]
            q = F.linear(q_in, w_in[:c], b_in[:c])
            k = F.linear(kv_in, w_in[c:2 * c], b_in[c:2 * c])
            v = F.linear(kv_in, w_in[2 * c:], b_in[2 * c:])
            nh, hd = HEADS[i], c // HEADS[i]
            q, k, v = (z.reshape(B, -1, nh, hd).transpose(1, 2) for z in (q, k, v))
            a = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(-1) @ v  # nn.MultiheadAttention
            a = a.transpose(1, 2).reshape(B, -1, c)
            tok = tok + F.linear(a, sd[b + "attn.attn.out_proj.weight"], sd[b + "attn.attn.out_proj.bias"])
            h = ln(tok, b + "norm2").transpose(1, 2).reshape(B, c, H, W)  # MixFFN on the map
            h = F.conv2d(h, sd[b + "ffn.layers.0.weight"], sd[b + "ffn.layers.0.bias"])
            h = F.conv2d(h, sd[b + "ffn.layers.1.weight"], sd[b + "ffn.layers.1.bias"], padding=1, groups=4 * c)
            h = F.conv2d(F.gelu(h), sd[b + "ffn.layers.4.weight"], sd[b + "ffn.layers.4.bias"])
            tok = tok + h.flatten(2).transpose(1, 2)
        t = ln(tok, L + "2").transpose(1, 2).reshape(B, c, H, W)
        feats.append(t)

    def cbr(z, k):
        z = F.conv2d(z, sd[k + ".conv.weight"])
        z = F.batch_norm(z, sd[k + ".bn.running_mean"], sd[k + ".bn.running_var"], sd[k + ".bn.weight"],
                         sd[k + ".bn.bias"], False, 0.0, 1e-5)
        return F.relu(z)

    size = feats[0].shape[-2:]
    outs = [F.interpolate(cbr(f, f"decode_head.convs.{i}"), size=size, mode="bilinear", align_corners=False)
            for i, f in enumerate(feats)]
    return F.conv2d(cbr(torch.cat(outs, 1), "decode_head.fusion_conv"), sd["decode_head.conv_seg.weight"],
                    sd["decode_head.conv_seg.bias"])


def _save(tmp_path, sd, name):
    path = tmp_path / name
    torch.save({"meta": {"dataset_meta": {}}, "state_dict": sd}, path)
    return path


def _f32(sd):
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_b2_with_mmseg_256_head_loads_by_name_and_matches_in_float32_and_float64(tmp_path):
    sd, dims, depths = mmseg_state_dict("b2")
    path = _save(tmp_path, sd, "segformer_mit-b2_mmseg.pth")  # float64 tensors
    model = attnseg.load_model(path, model="segformer-b2")  # no arguments beyond the variant
    assert model.config["decoder_dim"] == 256 and model.config["head_style"] == "mmseg" and model.num_classes == 9
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        got32 = model(x.float())
        want32 = mmseg_reference(_f32(sd), x.float(), dims, depths)
        got64 = attnseg.load_model(path, model="segformer-b2", dtype=torch.float64)(x)
        want64 = mmseg_reference(sd, x, dims, depths)
    assert got32.shape == want32.shape == (1, 9, 16, 24)
    assert (got32 - want32).abs().max() <= 1e-5 * max(1.0, want32.abs().max().item())
    assert _rel(got64, want64) <= 1e-9
    # one LayerNorm epsilon off (1e-5 for 1e-6) hides in a float32 tolerance but not in float64
    wrong = mmseg_reference(sd, x, dims, depths, wrong_eps_at="backbone.layers.3.1.2.norm2")
    assert _rel(got64, wrong) > 1e-9


@pytest.mark.parametrize("size,depths", [("b1", None), ("b3", [1, 1, 2, 1]), ("b4", [1, 2, 1, 1]),
                                         ("b5", [1, 1, 1, 1])])
def test_b1_to_b5_mmseg_checkpoints_round_trip(tmp_path, size, depths):
    """B3-B5 at reduced depth (named with depths=...); widths and the 256 head come from the tensors."""
    sd, dims, depths_used = mmseg_state_dict(size, depths, num_classes=5)
    extra = {"depths": depths} if depths else {}
    model = attnseg.load_model(_save(tmp_path, sd, f"{size}.pth"), model=f"segformer-{size}", **extra)
    assert model.config["decoder_dim"] == 256 and model.num_classes == 5
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = mmseg_reference(_f32(sd), x, dims, depths_used)
        assert (model(x) - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())
    path = attnseg.save_model(model, tmp_path / f"{size}.safetensors")  # the resolved config travels along
    again = attnseg.load_model(path)
    assert again.config["decoder_dim"] == 256 and again.variant == f"segformer-{size}"


def test_a_width_the_checkpoint_contradicts_is_one_line_naming_both_shapes(tmp_path):
    sd, _, _ = mmseg_state_dict("b0", num_classes=4)
    with pytest.raises(ModelLoadError) as e:
        attnseg.load_model(_save(tmp_path, sd, "b0.pth"), model="segformer-b1", depths=[2, 2, 2, 2])
    msg = str(e.value)
    assert "\n" not in msg and "checkpoint (32," in msg and "model (64," in msg

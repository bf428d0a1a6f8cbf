"""SegFormer / MiT: every variant trains, shapes, parameter counts, input validation."""
import pytest
import torch

import attnseg
from attnseg.models import MODELS


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def small(name):
    """Real variant, reduced depth for the largest ones so the test stays fast."""
    kw = {"num_classes": 7} if name.startswith("segformer") else {}
    if name.split("-")[1] in ("b2", "b3", "b4", "b5"):
        kw["depths"] = [1, 1, 1, 1]
    return attnseg.create_model(name, **kw)


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith(("segformer", "mit"))])
def test_forward_backward_every_param_gets_grad(name):
    torch.manual_seed(0)
    m = small(name).train()
    x = torch.randn(2, 3, 97, 131)
    out = m(x)
    if name.startswith("segformer"):
        assert out.shape == (2, 7, 25, 33)  # 1/4 of the input, rounded up by the padded convs
        loss = out.float().square().mean()
    else:
        assert [o.shape[-2:] for o in out] == [(25, 33), (13, 17), (7, 9), (4, 5)]
        loss = sum(o.float().square().mean() for o in out)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_parameter_counts_match_paper():
    # paper: B0 3.8M, B2 27.5M (150 classes)
    assert 3.7e6 <= n_params(attnseg.create_model("segformer-b0", num_classes=150)) <= 3.8e6
    assert 27.3e6 <= n_params(attnseg.create_model("segformer-b2", num_classes=150)) <= 27.6e6


def test_official_dims():
    cfg = attnseg.create_model("segformer-b5", num_classes=19).config
    assert cfg["embed_dims"] == [64, 128, 320, 512] and cfg["depths"] == [3, 6, 40, 3]
    assert cfg["num_heads"] == [1, 2, 5, 8] and cfg["sr_ratios"] == [8, 4, 2, 1] and cfg["decoder_dim"] == 768
    assert attnseg.create_model("segformer-b1").config["decoder_dim"] == 256


def test_fused_eval_head_equals_literal_head():
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    m = attnseg.create_model("segformer-b0", num_classes=19).eval()
    randomize_bn(m)
    x = torch.randn(1, 3, 130, 170)
    with torch.no_grad():
        fast = m(x)
        m.decode_head.fused = False
        ref = m(x)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-5), (fast - ref).abs().max()


def test_allmlp_on_cnn_backbone_trains_and_is_the_literal_decoder():
    """SANet's plain-head baseline: every parameter gets a gradient, logits at stride 4, and the decoder
    on the CNN's maps equals an independent concat -> fuse -> classify written here."""
    from tests.conftest import randomize_bn
    import torch.nn.functional as F

    torch.manual_seed(0)
    m = attnseg.create_model("allmlp-tiny", num_classes=5).train()
    x = torch.randn(2, 3, 97, 131)
    out = m(x)
    assert out.shape == (2, 5, 25, 33)
    out.square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing
    m.eval()
    randomize_bn(m)
    h = m.decode_head
    with torch.no_grad():
        feats = m.backbone(x)
        ups = []
        for i, f in enumerate(feats):
            lin = getattr(h, f"linear_c{i + 1}").proj
            y = torch.einsum("bchw,dc->bdhw", f, lin.weight) + lin.bias[:, None, None]
            ups.append(F.interpolate(y, feats[0].shape[-2:], mode="bilinear", align_corners=False))
        z = h.linear_fuse.bn(h.linear_fuse.conv(torch.cat(ups[::-1], 1))).relu()
        ref = h.linear_pred(z)
        assert torch.allclose(m(x), ref, atol=1e-5, rtol=1e-4), (m(x) - ref).abs().max()


def test_bad_input_raises_clear_errors():
    m = attnseg.create_model("segformer-tiny", num_classes=3)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="got shape"):
        m(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="float"):
        m(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_unknown_model_and_option_errors_list_valid_choices():
    with pytest.raises(ValueError, match="segformer-b0"):
        attnseg.create_model("segformer-b9")
    with pytest.raises(ValueError, match="valid options"):
        attnseg.create_model("segformer-b0", not_an_option=1)
    assert "segformer-b2" in attnseg.list_models() and "mit-b5" in attnseg.list_models()


def test_isr_reset_is_bit_identical():
    torch.manual_seed(0)
    m = attnseg.create_model("segformer-tiny", num_classes=4).eval()
    x = torch.randn(1, 3, 96, 120)
    with torch.no_grad():
        a = m(x)
        m.set_isr(encoder=[2, 2, 1, 1])
        b = m(x)
        m.set_isr(encoder=[1, 1, 1, 1])
        c = m(x)
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_fused_training_path_matches_literal_forward_and_gradients():
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    a = attnseg.create_model("segformer-tiny", num_classes=5, dropout=0.0, drop_path_rate=0.0).train()
    randomize_bn(a)
    b = attnseg.create_model("segformer-tiny", num_classes=5, dropout=0.0, drop_path_rate=0.0).train()
    b.load_state_dict(a.state_dict())
    b.decode_head.fused = False
    x = torch.randn(2, 3, 70, 90)
    ya, yb = a(x), b(x)
    assert torch.allclose(ya, yb, atol=1e-5)
    ya.square().mean().backward()
    yb.square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5, rtol=1e-4), n
    assert torch.allclose(a.decode_head.linear_fuse.bn.running_mean, b.decode_head.linear_fuse.bn.running_mean,
                          atol=1e-6)


@pytest.mark.parametrize("src,dst", [((16, 16), (128, 128)), ((7, 9), (50, 131)), ((13, 5), (13, 20)), ((40, 30), (17, 11))])
def test_resize_sum_equals_summed_bilinear_resizes(src, dst):
    """The matrix form of bilinear resizing (used in ONNX graphs) against F.interpolate, up and down."""
    from attnseg.models.layers import interp_matrix, resize_sum

    torch.manual_seed(0)
    a = torch.randn(2, 3, *src)
    b = torch.randn(2, 3, src[0] // 2 + 1, src[1] + 3)
    want = sum(torch.nn.functional.interpolate(t, size=dst, mode="bilinear", align_corners=False) for t in (a, b))
    assert torch.allclose(resize_sum([a, b], dst), want, atol=1e-5)
    assert torch.allclose(interp_matrix(src[0], dst[0]).sum(1), torch.ones(dst[0]))  # rows are convex weights


@pytest.mark.parametrize("name", ["segformer-b0", "edaformer-tiny"])
def test_export_forms_equal_eager_forms(name):
    """The layer forms traced for ONNX (fc1 as 1x1 conv, ReLU FFN too; matrix upsampling) compute the same."""
    from attnseg.models.layers import export_forms, exporting
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    m = attnseg.create_model(name, num_classes=9).eval()
    randomize_bn(m)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        want = m(x)
        with export_forms():
            assert exporting()
            got = m(x)
    assert not exporting()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()

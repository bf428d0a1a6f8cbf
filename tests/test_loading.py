"""load_model: attnseg, transformers, official NVlabs and mmseg formats; exact parity with transformers."""
import os
import time

import pytest
import torch
from safetensors.torch import save_file

import attnseg
from attnseg.checkpoint import ModelLoadError
from tests.conftest import randomize_bn

transformers = pytest.importorskip("transformers")

HF_VARIANTS = {
    "segformer-tiny": dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4],
                           decoder_hidden_size=16),
    "segformer-b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
                         decoder_hidden_size=256),
    "segformer-b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_attention_heads=[1, 2, 5, 8],
                         decoder_hidden_size=768),
}


def hf_model(variant, num_labels=11, seed=0):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    cfg = SegformerConfig(num_labels=num_labels, **HF_VARIANTS[variant])
    m = SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():  # init is tiny (std 0.02); widen it so differences would show
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    randomize_bn(m, seed)
    return m


@pytest.mark.parametrize("variant", ["segformer-tiny", "segformer-b0", "segformer-b2"])
def test_transformers_parity(tmp_path, variant):
    ref = hf_model(variant)
    ref.save_pretrained(tmp_path)
    ours = attnseg.load_model(tmp_path)
    assert ours.variant == variant and ours.num_classes == 11
    assert ours.config["norm_eps"] == 1e-5  # transformers uses nn.LayerNorm's default everywhere
    x = torch.randn(1, 3, 200, 328)
    with torch.no_grad():
        want = ref(pixel_values=x).logits
        got = ours(x)
        ours.decode_head.fused = False
        got_literal = ours(x)
    assert got.shape == want.shape == (1, 11, 50, 82)
    assert (got - want).abs().max() <= 1e-5
    assert (got_literal - want).abs().max() <= 1e-5
    ours64 = attnseg.load_model(tmp_path, dtype=torch.float64)  # float64 parity: 1e-9 relative
    ref64 = ref.double()
    with torch.no_grad():
        want64 = ref64(pixel_values=x.double()).logits
        got64 = ours64(x.double())
    assert ((got64 - want64).abs().max() / want64.abs().max()).item() <= 1e-9


def test_transformers_v5_module_names_and_model_arg(tmp_path):
    ref = hf_model("segformer-tiny")
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}  # transformers 5 in-memory names
    save_file(sd, tmp_path / "weights.safetensors")
    with pytest.raises(ModelLoadError, match="model="):
        attnseg.load_model(tmp_path / "weights.safetensors")
    ours = attnseg.load_model(tmp_path / "weights.safetensors", model="segformer-tiny",
                              num_heads=[1, 2, 2, 4], norm_eps=1e-5, patch_norm_eps=1e-5, sr_norm_eps=1e-5)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert (ours(x) - ref(pixel_values=x).logits).abs().max() <= 1e-5


def test_transformers_id2label_becomes_class_names(tmp_path):
    ref = hf_model("segformer-tiny", num_labels=3)
    ref.config.id2label = {0: "sky", 1: "road", 2: "car"}
    ref.config.label2id = {"sky": 0, "road": 1, "car": 2}
    ref.save_pretrained(tmp_path)
    assert attnseg.load_model(tmp_path).meta["class_names"] == ["sky", "road", "car"]


def test_transformers_encoder_only_loads_into_mit(tmp_path):
    from transformers import SegformerConfig, SegformerModel

    torch.manual_seed(0)
    ref = SegformerModel(SegformerConfig(**{k: v for k, v in HF_VARIANTS["segformer-tiny"].items()
                                            if k != "decoder_hidden_size"})).eval()
    ref.save_pretrained(tmp_path)
    ours = attnseg.load_model(tmp_path)
    assert ours.variant == "mit-tiny"
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        got = ours(x)[-1]
        want = ref(pixel_values=x).last_hidden_state
    assert (got - want).abs().max() <= 1e-5


def _official_state_dict(model):
    """The NVlabs/SegFormer release layout: our names plus mmseg 0.x's unused conv_seg, under state_dict."""
    sd = dict(model.state_dict())
    k = model.num_classes
    sd["decode_head.conv_seg.weight"] = torch.randn(k, model.config["decoder_dim"], 1, 1)
    sd["decode_head.conv_seg.bias"] = torch.randn(k)
    return {"state_dict": sd, "meta": {"CLASSES": None}}


def test_official_checkpoint_loads_strict_with_inferred_classes(tmp_path):
    torch.manual_seed(0)
    src = attnseg.create_model("segformer-tiny", num_classes=13).eval()
    randomize_bn(src)
    torch.save(_official_state_dict(src), tmp_path / "segformer.tiny.pth")
    with pytest.raises(ModelLoadError, match="model="):
        attnseg.load_model(tmp_path / "segformer.tiny.pth")
    ours = attnseg.load_model(tmp_path / "segformer.tiny.pth", model="segformer-tiny")
    assert ours.num_classes == 13 and ours.config["norm_eps"] == 1e-6
    x = torch.randn(2, 3, 77, 99)
    with torch.no_grad():
        assert torch.equal(ours(x), src(x))
    with pytest.raises(ModelLoadError, match="13 classes"):
        attnseg.load_model(tmp_path / "segformer.tiny.pth", model="segformer-tiny", num_classes=5)
    with pytest.raises(ModelLoadError, match="shape mismatch|missing"):
        attnseg.load_model(tmp_path / "segformer.tiny.pth", model="segformer-b0")


def to_mmseg(sd):
    """Our names -> mmsegmentation 1.x names, written here independently of attnseg.checkpoint."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if k.startswith("backbone.patch_embed"):
            i = int(parts[1][-1]) - 1
            out[f"backbone.layers.{i}.0.{'projection' if parts[2] == 'proj' else 'norm'}.{parts[3]}"] = v
        elif k.startswith("backbone.block"):
            i, j, rest = int(parts[1][-1]) - 1, parts[2], ".".join(parts[3:])
            pre = f"backbone.layers.{i}.1.{j}."
            if rest.startswith("attn.q."):
                kv = sd[k.replace("attn.q.", "attn.kv.")]
                out[pre + "attn.attn.in_proj_" + parts[-1]] = torch.cat([v, kv])
            elif rest.startswith("attn.kv."):
                continue
            elif rest.startswith("attn.proj."):
                out[pre + "attn.attn.out_proj." + parts[-1]] = v
            elif rest.startswith("mlp.fc1."):
                out[pre + "ffn.layers.0." + parts[-1]] = v[..., None, None] if v.ndim == 2 else v
            elif rest.startswith("mlp.dwconv.dwconv."):
                out[pre + "ffn.layers.1." + parts[-1]] = v
            elif rest.startswith("mlp.fc2."):
                out[pre + "ffn.layers.4." + parts[-1]] = v[..., None, None] if v.ndim == 2 else v
            else:  # norm1, norm2, attn.sr, attn.norm
                out[pre + rest] = v
        elif k.startswith("backbone.norm"):
            out[f"backbone.layers.{int(parts[1][-1]) - 1}.2.{parts[2]}"] = v
        elif k.startswith("decode_head.linear_c"):
            out[f"decode_head.convs.{int(parts[1][-1]) - 1}." + ".".join(parts[2:])] = v
        elif k.startswith("decode_head.linear_fuse."):
            out["decode_head.fusion_conv." + ".".join(parts[2:])] = v
        elif k.startswith("decode_head.linear_pred."):
            out["decode_head.conv_seg." + parts[2]] = v
        else:
            raise AssertionError(k)
    return out


def test_mmseg_round_trip(tmp_path):
    torch.manual_seed(0)
    src = attnseg.create_model("segformer-tiny", num_classes=6, head_style="mmseg",
                               norm_eps=1e-6, patch_norm_eps=1e-6, sr_norm_eps=1e-6).eval()
    randomize_bn(src)
    mm = to_mmseg(src.state_dict())
    assert "backbone.layers.0.1.0.attn.attn.in_proj_weight" in mm and "decode_head.fusion_conv.conv.weight" in mm
    mm["data_preprocessor.mean"] = torch.zeros(3, 1, 1)
    torch.save({"meta": {}, "state_dict": mm}, tmp_path / "mmseg.pth")
    ours = attnseg.load_model(tmp_path / "mmseg.pth", model="segformer-tiny")
    assert ours.config["head_style"] == "mmseg" and ours.config["patch_norm_eps"] == 1e-6
    x = torch.randn(1, 3, 90, 70)
    with torch.no_grad():
        assert torch.equal(ours(x), src(x))
    mm["decode_head.aux.weight"] = torch.zeros(1)
    torch.save({"state_dict": mm}, tmp_path / "bad.pth")
    with pytest.raises(ModelLoadError, match=r"no rule maps: decode_head\.aux\.weight"):
        attnseg.load_model(tmp_path / "bad.pth", model="segformer-tiny")


def test_missing_key_is_named(tmp_path):
    src = attnseg.create_model("segformer-tiny", num_classes=3)
    sd = _official_state_dict(src)
    del sd["state_dict"]["backbone.norm4.weight"]
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(ModelLoadError, match=r"missing 1 key\(s\): backbone\.norm4\.weight"):
        attnseg.load_model(tmp_path / "x.pth", model="segformer-tiny")


def test_attnseg_format_round_trip_and_atomic(tmp_path):
    torch.manual_seed(0)
    m = attnseg.create_model("segformer-tiny", num_classes=3, drop_path_rate=0.0).eval()
    randomize_bn(m)
    p = attnseg.save_model(m, tmp_path / "m.safetensors", class_names=["a", "b", "c"], palette=[[1, 2, 3]] * 3)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temp files left behind
    back = attnseg.load_model(p)
    assert back.variant == "segformer-tiny" and back.meta["class_names"] == ["a", "b", "c"]
    assert back.config == m.config
    x = torch.randn(1, 3, 50, 60)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))
    with pytest.raises(ModelLoadError, match="segformer-tiny model"):
        attnseg.load_model(p, model="mit-b0")
    with pytest.raises(ValueError, match="class names"):
        attnseg.save_model(m, tmp_path / "n.safetensors", class_names=["a"])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    m = attnseg.create_model("segformer-tiny", num_classes=3)
    p = attnseg.save_model(m, tmp_path / "m.safetensors")
    data = p.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.safetensors"):
        attnseg.load_model(tmp_path / "cut.safetensors")


def test_hub_id_fails_fast_offline(monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    t = time.time()
    with pytest.raises(ModelLoadError, match="local"):
        attnseg.load_model("nvidia/segformer-b0-finetuned-ade-512-512")
    assert time.time() - t < 30


def test_unknown_sources():
    with pytest.raises(ModelLoadError, match="create_model"):
        attnseg.load_model("segformer-b0")
    with pytest.raises(ModelLoadError, match="not found"):
        attnseg.load_model("no_such_file.pth")
    with pytest.raises(ValueError, match="Valid names"):
        attnseg.load_model("x.pth", model="segformer-x")


# -- a file we cannot identify is said to be so, never answered with unpickling advice ---------------------------

def _checkpoint_error(path) -> str:
    with pytest.raises(ModelLoadError) as e:
        attnseg.load_model(path)
    msg = str(e.value)
    assert "weights_only" not in msg and "trust" not in msg and "\n" not in msg, msg
    return msg


def test_corrupt_and_random_checkpoints_are_named_not_unpickled(tmp_path):
    m = attnseg.create_model("segformer-tiny", num_classes=3)
    good = attnseg.save_model(m, tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    assert "not a complete safetensors file" in _checkpoint_error(tmp_path / "cut.safetensors")
    rnd = os.urandom(4096)
    for name in ("random.safetensors", "random.bin", "random.pth"):
        (tmp_path / name).write_bytes(rnd)
        msg = _checkpoint_error(tmp_path / name)
        assert "not a checkpoint attnseg can read" in msg and "Accepted:" in msg, msg
    huge = (2**62).to_bytes(8, "little") + b'{"a": 1}'
    (tmp_path / "huge.safetensors").write_bytes(huge)
    assert "header length 4,611,686,018,427,387,904 exceeds the file size 16" in _checkpoint_error(
        tmp_path / "huge.safetensors")
    torch.save({"state_dict": m.state_dict()}, tmp_path / "zip.pth")
    data = (tmp_path / "zip.pth").read_bytes()
    (tmp_path / "cutzip.pth").write_bytes(data[: len(data) // 2])
    assert "starts as a zip archive" in _checkpoint_error(tmp_path / "cutzip.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_payload_is_refused_without_unpickling_advice(tmp_path):
    torch.save({"state_dict": {}, "trainer": _Payload()}, tmp_path / "lightning.ckpt")
    msg = _checkpoint_error(tmp_path / "lightning.ckpt")
    assert "Python objects besides tensors" in msg and "state_dict()" in msg

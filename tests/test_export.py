"""ONNX export (attnseg.deploy.export) of every architecture, fixed-size graphs, and clean outputs and temp files."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.cli import main
from tests.helpers import one_line_error, photo

ROOT = Path(__file__).resolve().parents[1]
ATTNSEG = [sys.executable, "-m", "attnseg.cli"]


@pytest.mark.slow
@pytest.mark.parametrize("name,isr", [("segformer-tiny", None), ("edaformer-tiny", "2,2,1,1:2,2,2"),
                                      ("allmlp-tiny", None), ("sanet-tiny", None), ("nlnet-tiny", None)])
def test_one_dynamic_graph_computes_the_model_in_onnxruntime_and_openvino(tmp_path, monkeypatch, name, isr):
    """Each family's graph, exported once with batch, height and width symbolic (an ISR setting baked in), equals
    eager PyTorch at sizes it was not traced at, in onnxruntime and in OpenVINO, which reads the same export."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = attnseg.create_model(name, num_classes=5).eval()
    backends = ["onnx"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    opened = [attnseg.open(model, backend=b, threads=2, isr=isr, progress=None) for b in backends]  # ISR on model
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1 and not (tmp_path / "openvino").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    # 64x64 first: EDAFormer's first stage then pools (x2 under ISR) to a single key, which in OpenVINO's dynamic
    # graph would leave every later input wrong (see openvino.SMALL_SIDE)
    for shape in [(1, 3, 64, 64), (3, 3, 97, 131), (2, 3, 257, 383)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = model(x)
        for m in opened:
            if name == "sanet-tiny" and m.backend == "openvino" and max(shape[-2:]) < 256:
                # its 8x8 squeeze pool is larger than the stride-32 map: OpenVINO refuses it, in one line
                with pytest.raises(ValueError, match="too small for this graph in OpenVINO"):
                    m(x)
                continue
            got = m(x)
            assert got.shape == want.shape, m.backend
            assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item()), m.backend
    for m, backend in zip(opened, backends):
        assert m.backend == backend and m.num_classes == 5 and m.variant == name


def test_every_architecture_is_exported_by_a_test_or_refused_in_one_line(tmp_path):
    """Families exported dynamically in tests (their tiny variants share every module with the full ones),
    and encoders, which return a feature pyramid, refused with a reason."""
    from attnseg.deploy.export import ExportError, export_onnx
    from attnseg.models import MODELS, has_classifier

    tested = {"segformer", "edaformer", "lseg", "sanet", "allmlp", "nlnet"}  # above, and LSeg in test_tools.py
    for name in MODELS:
        fam = name.split("-")[0]
        if has_classifier(name) or fam == "lseg":
            assert fam in tested, f"{name}: no dynamic export test for its family"
    with pytest.raises(ExportError, match="encoder"):
        export_onnx(attnseg.create_model("mit-tiny"), tmp_path / "e.onnx")
    assert not list(tmp_path.iterdir())


def test_fixed_size_onnx_says_so(tmp_path, tiny_ckpt, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", tiny_ckpt, "--out", str(tmp_path / "f.onnx"), "--size", "64x64"]) == 0
    capsys.readouterr()
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    # a fixed graph runs every whole image resized to its size (as an int8 graph of that size does), and the
    # label map comes back at the image's size; slide windows must be its size
    assert main(["predict", str(img), "--model", str(tmp_path / "f.onnx"), "--out", str(tmp_path / "o")]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == photo().shape[:2]
    capsys.readouterr()
    one_line_error(capsys, main(["predict", str(img), "--model", str(tmp_path / "f.onnx"), "--mode", "slide",
                                 "--crop", "32", "--out", str(tmp_path / "o")]), "fixed-size")
    assert main(["predict", str(img), "--model", str(tmp_path / "f.onnx"), "--mode", "slide", "--crop", "64",
                 "--out", str(tmp_path / "o")]) == 0


def test_export_and_eval_out_naming_a_folder(tmp_path, tiny_ckpt, capsys, camvid_root):
    one_line_error(capsys, main(["export", "--model", tiny_ckpt, "--out", str(tmp_path)]), "is a folder")
    # attnseg knows a graph by its suffix: an ONNX graph named .xml would later be read as an OpenVINO IR
    for name in ("m.xml", "m.txt"):
        one_line_error(capsys, main(["export", "--model", tiny_ckpt, "--out", str(tmp_path / name)]),
                       "an ONNX graph is written as NAME.onnx")
    (tmp_path / "g.onnx").write_bytes(b"\x08\x01")
    one_line_error(capsys, main(["export", "--model", str(tmp_path / "g.onnx"), "--out", str(tmp_path / "h.onnx")]),
                   "is already a graph")
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".xml", ".txt") or p.name == "h.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    m3 = attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=11), tmp_path / "m11.safetensors")
    one_line_error(capsys, main(["eval", "--model", str(m3), "--dataset", "camvid", "--data-root", str(camvid_root),
                                 "--split", "test", "--out", str(tmp_path), "--plot", str(tmp_path / "p")]),
                   "is a folder")
    assert not (tmp_path / "p").exists()  # refused before anything ran or was written


@pytest.mark.slow
def test_onnx_backend_leaves_no_temp_folder(tmp_path, tiny_ckpt, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    Image.fromarray(photo()).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--backend", "onnx", "--out",
                 str(tmp_path / "o")]) == 0
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_onnx_export_prints_no_torchvision_noise(tmp_path):
    pytest.importorskip("onnxruntime")
    r = subprocess.run([*ATTNSEG, "export", "--model", "segformer-tiny", "--num-classes", "3", "--out",
                        str(tmp_path / "m.onnx"), "--size", "64x64"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr + r.stdout

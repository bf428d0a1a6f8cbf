"""Segmenter and the `attnseg` CLI (predict, models, --version)."""
import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.cli import main


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    m = attnseg.create_model("segformer-tiny", num_classes=3)
    return attnseg.save_model(m, tmp_path / "tiny.safetensors", class_names=["sky", "road", "car"])


def test_segmenter_accepts_path_pil_array(tmp_path, tiny_ckpt):
    seg = attnseg.Segmenter(attnseg.load_model(tiny_ckpt))
    rgb = (np.random.default_rng(0).random((45, 71, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    outs = [seg.predict(rgb), seg.predict(Image.fromarray(rgb)), seg.predict(tmp_path / "a.png")]
    for o in outs:
        assert o.shape == (45, 71) and o.min() >= 0 and o.max() < 3
    assert (outs[0] == outs[1]).all() and (outs[0] == outs[2]).all()
    assert seg.predict(rgb).shape == attnseg.Segmenter(seg.model, size=32).predict(rgb).shape
    with pytest.raises(ValueError, match="uint8"):
        seg.predict(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="not found"):
        seg.predict(tmp_path / "missing.png")


def test_predict_skips_corrupt_file_and_exits_nonzero(tmp_path, tiny_ckpt, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    rgb = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(inp / "good1.png")
    Image.fromarray(rgb).save(inp / "good2.jpg")
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    rc = main(["predict", str(inp), "--model", str(tiny_ckpt), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "broken.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["good1.png", "good1_overlay.jpg", "good2.png",
                                                      "good2_overlay.jpg"]
    lab = Image.open(out / "good1.png")
    assert lab.mode == "P" and lab.size == (60, 40)


def test_predict_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.png"), "--model", "x"]) == 2
    assert "input not found" in capsys.readouterr().err
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    assert main(["predict", str(img), "--model", "segformer-b0"]) == 2
    assert "no shipped weights" in capsys.readouterr().err


def test_models_and_version(capsys):
    assert main(["models", "--filter", "segformer-b0"]) == 0
    out = capsys.readouterr().out
    assert "segformer-b0" in out and "3.75" in out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and attnseg.__version__ in capsys.readouterr().out

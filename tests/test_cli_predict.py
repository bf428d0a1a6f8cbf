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
        assert main(["predict", ".", "--model", tiny_ckpt, "--backend", "eager"]) == 0
    assert sorted(os.listdir("outputs")) == ["street.png", "street_overlay.jpg"]


def test_same_names_in_two_folders_or_two_extensions_keep_both(tmp_path, tiny_ckpt, capsys):
    for sub, name, seed in (("a", "x.png", 1), ("b", "x.png", 2), ("c", "x.png", 3), ("c", "x.jpg", 4)):
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.fromarray(photo(seed=seed)).save(tmp_path / sub / name)
    out = tmp_path / "dup"
    assert main(["predict", str(tmp_path / "a"), str(tmp_path / "b"), "--model", tiny_ckpt, "--backend", "eager",
                 "--out", str(out)]) == 0
    assert "wrote 2 label map(s)" in capsys.readouterr().out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a/x.png", "b/x.png"]
    out2 = tmp_path / "ext"
    assert main(["predict", str(tmp_path / "c"), "--model", tiny_ckpt, "--backend", "eager", "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.glob("*.png")) == ["x.jpg.png", "x.png.png"]
    assert main(["predict", str(tmp_path / "c"), "--model", tiny_ckpt, "--backend", "eager", "--out", str(out2)]) == 0
    assert "replaced 4 existing" in capsys.readouterr().out  # a rerun says what it replaced


def test_predict_option_errors_are_one_line(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    (tmp_path / "file").write_text("x")
    m = ["--model", tiny_ckpt, "--backend", "eager"]
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
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--backend", "eager", "--dtype", "bf16",
                 "--out", str(tmp_path / "b")]) == 0
    assert main(["predict", str(tmp_path / "a.png"), "--model", tiny_ckpt, "--backend", "eager", "--out",
                 str(tmp_path / "f")]) == 0
    a = np.asarray(Image.open(tmp_path / "b" / "a.png"))
    b = np.asarray(Image.open(tmp_path / "f" / "a.png"))
    assert a.shape == b.shape and (a == b).mean() > 0.8  # bf16 rounding moves few argmaxes
    pytest.importorskip("onnxruntime")
    assert main(["export", "--model", tiny_ckpt, "--out", str(tmp_path / "m.onnx"), "--size", "48x64"]) == 0
    capsys.readouterr()
    one_line_error(capsys, main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m.onnx"), "--dtype",
                                 "bf16", "--out", str(tmp_path / "o")]), "bf16")


def test_inputs_that_lie_inside_out_are_named_as_such(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "ph" / "seg").mkdir(parents=True)
    Image.fromarray(photo()).save(tmp_path / "ph" / "seg" / "a.png")
    err = one_line_error(capsys, main(["predict", str(tmp_path / "ph" / "seg"), "--model", tiny_ckpt,
                                       "--out", str(tmp_path / "ph")]), "lie inside --out", "choose an --out")
    assert "no images" not in err


def test_batches_are_bounded_by_pixels_as_well_as_images(tmp_path, tiny_ckpt, monkeypatch):
    """Four same-size photos with --batch 4 run as one batch when small, one at a time when each fills the
    pixel bound; the label maps are the same either way."""
    import attnseg
    from attnseg.inference import segmenter

    seg = attnseg.Segmenter(attnseg.load_model(tiny_ckpt))
    images = [photo(60, 80, seed=i) for i in range(4)]
    calls = []
    batch = seg.predict_batch
    monkeypatch.setattr(seg, "predict_batch", lambda ims, **kw: calls.append(len(ims)) or batch(ims, **kw))
    together = seg.predict_images(images)
    assert calls == [4]
    monkeypatch.setattr(segmenter, "BATCH_PIXELS", 2 * 60 * 80)
    calls.clear()
    pairs = seg.predict_images(images)
    assert calls == [2, 2]
    monkeypatch.setattr(segmenter, "BATCH_PIXELS", 60 * 80)
    calls.clear()
    alone = seg.predict_images(images)
    assert calls == []  # each through predict, alone
    for a, b, c in zip(together, pairs, alone):  # batched and single runs may differ only at float ties
        assert (a == b).mean() > 0.999 and (a == c).mean() > 0.999


def test_a_url_input_without_pyarrow_names_the_extra(tmp_path):
    import subprocess
    import sys

    from tests.conftest import without_modules

    r = subprocess.run([sys.executable, "-m", "attnseg.cli", "predict", "s3://bucket/street.png", "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
                       env=without_modules(tmp_path, "pyarrow"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "reading URLs needs pyarrow" in r.stderr and "pip install 'attnseg[ray]'" in r.stderr

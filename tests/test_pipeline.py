"""inference/pipeline.py: the one predict pipeline. `attnseg predict` (local) and the steps `--engine ray` runs in
its tasks and actors (ray_engine.predict.read_row and _setup, called here directly, without a cluster) give the
same files and the same one-line reasons for the same inputs."""
import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnseg.cli import build_parser, main
from attnseg.inference import pipeline

from tests.helpers import photo


def _inputs(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(photo(40, 60, 0)).save(folder / "a.png")
    Image.fromarray(photo(40, 60, 1)).save(folder / "b.jpg")
    Image.fromarray(photo(30, 50, 2)).save(folder / "c.png")  # another size: another forward pass
    Image.fromarray(photo(2, 900, 3)).save(folder / "wide.png")  # 450:1, no working size fits
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return folder


def _files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _ray_steps(args, plan) -> list[dict]:
    """What the Ray job does with `plan`, in this process: the read task per row, then the actor's batch work."""
    from attnseg.cli.predict import _segmenter
    from attnseg.ray_engine.predict import _setup, read_row

    rows = [read_row({"src": str(f), "base": str(b)}, args.max_pixels, overwrite=True) for f, b in plan]
    work = _setup(lambda: _segmenter(copy.copy(args)), args.alpha)
    return [r for i in range(0, len(rows), args.batch) for r in work(rows[i:i + args.batch])]


def test_local_and_ray_steps_write_the_same_files_and_give_the_same_reasons(tmp_path, tiny_ckpt, capsys):
    src = _inputs(tmp_path / "in")
    common = ["--model", tiny_ckpt, "--backend", "eager", "--batch", "2"]
    assert main(["predict", str(src), "--out", str(tmp_path / "local"), *common]) == 1  # two images failed
    err = capsys.readouterr().err
    local_errors = sorted(ln for ln in err.splitlines() if ln.startswith("error: "))

    args = build_parser(["predict"]).parse_args(["predict", str(src), "--out", str(tmp_path / "ray"), *common])
    plan = pipeline.plan_outputs(args.inputs, Path(args.out))
    rows = _ray_steps(args, plan)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok", "failed"]  # a, b, broken, c, wide
    ray_errors = sorted(f"error: {r['reason']}; skipped" for r in rows if r["status"] == "failed")
    assert ray_errors == local_errors and len(local_errors) == 2
    assert any("broken.png" in e and "not an image" in e for e in ray_errors)
    assert any(e.startswith(f"error: {src / 'wide.png'}: ") and "256:1" in e for e in ray_errors)

    local, ray = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == ["a.png", "a_overlay.jpg", "b.png", "b_overlay.jpg", "c.png", "c_overlay.jpg"]
    assert local == ray  # byte for byte


def test_resume_skips_what_an_earlier_run_finished_and_redoes_the_rest(tmp_path, tiny_ckpt):
    from attnseg.cli.predict import _segmenter

    src = _inputs(tmp_path / "in")
    args = build_parser(["predict"]).parse_args(["predict", str(src), "--out", str(tmp_path / "o"), "--model",
                                                 tiny_ckpt, "--backend", "eager"])
    plan = pipeline.plan_outputs(args.inputs, Path(args.out))
    seg, palette, kw = _segmenter(copy.copy(args))
    first = [pipeline.read_item(str(f), str(b), None, resume=True) for f, b in plan]
    assert [r.status for r in pipeline.run_batch(seg, first, kw, palette, 0.5)] == \
        ["ok", "ok", "failed", "ok", "failed"]
    (tmp_path / "o" / "b_overlay.jpg").unlink()  # as if the run had stopped between b's two files
    again = [pipeline.read_item(str(f), str(b), None, resume=True) for f, b in plan]
    assert [it.skip for it in again] == ["earlier", "", "", "earlier", ""]
    results = pipeline.run_batch(seg, again, kw, palette, 0.5)
    assert [r.status for r in results] == ["skipped", "ok", "failed", "skipped", "failed"]
    assert (tmp_path / "o" / "b_overlay.jpg").is_file()


def test_a_batch_of_mixed_sizes_runs_each_size_in_its_own_pass(tmp_path, tiny_ckpt):
    from attnseg.cli.predict import _segmenter

    args = build_parser(["predict"]).parse_args(["predict", "x.png", "--model", tiny_ckpt, "--backend", "eager"])
    seg, palette, kw = _segmenter(copy.copy(args))
    images = [photo(40, 60, 0), photo(30, 50, 1), photo(40, 60, 2)]
    items = [pipeline.Item(f"i{k}", str(tmp_path / f"i{k}"), rgb=im) for k, im in enumerate(images)]
    results = pipeline.run_batch(seg, items, kw, palette, 0.5)
    for im, r in zip(images, results):
        assert r.status == "ok" and r.label.shape == im.shape[:2]
        assert np.array_equal(r.label, seg.predict(im))  # batched as a pass of its size, equal to one at a time


def test_plan_refusals_are_one_line():
    with pytest.raises(pipeline.PlanError, match="input not found: nowhere"):
        pipeline.plan_outputs(["nowhere"], Path("out"))

"""`attnseg predict VIDEO`: decode -> segment -> encode pipeline, on a clip built from CamVid test frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnseg
from attnseg.cli import main

av = pytest.importorskip("av")


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 30, rotation: float | None = None,
               codec: str = "libx264", container: str | None = None) -> Path:
    out = av.open(str(path), "w", format=container)
    st = out.add_stream(codec, rate=rate)
    st.height, st.width = frames[0].shape[:2]
    st.pix_fmt = "yuv420p"
    if codec == "libx264":
        st.options = {"crf": "0", "preset": "ultrafast"}  # lossless luma: decoded frames stay close
    if rotation is not None:
        st.set_display_rotation(rotation)
    for f in frames:
        for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
    out.close()
    return path


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture
def camvid_frames(camvid_root):
    """Six consecutive CamVid test frames (one sequence, 360x480)."""
    files = sorted((Path(camvid_root) / "test").glob("Seq05VD_*.png"))[:6]
    return [np.array(Image.open(f).convert("RGB")) for f in files]


def test_video_masks_match_image_predict_with_the_shipped_model(tmp_path, camvid_frames, capsys):
    clip = write_clip(tmp_path / "clip.mp4", camvid_frames)
    out = tmp_path / "out"
    rc = main(["predict", str(clip), "--out", str(out), "--save-masks", "--batch", "4", "--threads", "2",
               "--backend", "eager"])  # compared with the eager Segmenter below
    msg = capsys.readouterr().out
    assert rc == 0 and "6 frames of 480x360" in msg and "frames/s end to end" in msg
    video, masks = out / "clip_overlay.mp4", out / "clip_masks"
    written = decode(video)
    assert len(written) == 6 and written[0].shape == (360, 480, 3)
    assert sorted(p.name for p in masks.iterdir()) == [f"{i:06d}.png" for i in range(6)]
    # each mask = the label map `attnseg predict` gives the same decoded frame as an image (batched
    # frames through the one-step upsample-argmax may differ only at float ties)
    from attnseg.pretrained import default_model

    seg = attnseg.Segmenter(attnseg.load_model(default_model()))
    frames = decode(clip)
    for i in (0, 5):
        mask = np.array(Image.open(masks / f"{i:06d}.png"))
        ref = seg.predict(frames[i])
        assert (mask == ref).mean() > 0.9999
        assert len(np.unique(ref)) >= 5  # a real street scene, not a constant map
    # the overlay is the frame blended with the class colours (H.264 is lossy: compare on average)
    pal = np.asarray(seg.palette, np.float32)
    expect = 0.5 * frames[0] + 0.5 * pal[np.array(Image.open(masks / "000000.png"))]
    assert np.abs(written[0].astype(np.float32) - expect).mean() < 6


def test_predict_batch_equals_predict_on_labels(camvid_frames):
    seg = attnseg.Segmenter(attnseg.load_model("sanet-effnet-lite0-camvid"))
    batch = seg.predict_batch(camvid_frames[:3])
    for f, lab in zip(camvid_frames[:3], batch):
        assert (lab == seg.predict(f)).mean() > 0.9999


def test_phone_rotation_odd_sizes_and_onnx_backend(tmp_path, tiny_ckpt, capsys):
    rng = np.random.default_rng(0)
    frames = [(rng.random((50, 80, 3)) * 255).astype(np.uint8) for _ in range(5)]
    clip = write_clip(tmp_path / "phone.mov", frames, rotation=-90)  # a portrait phone video stored landscape
    rc = main(["predict", str(clip), "--model", tiny_ckpt, "--out", str(tmp_path / "o"), "--save-masks"])
    assert rc == 0, capsys.readouterr().err
    assert "5 frames of 50x80" in capsys.readouterr().out  # the size as shown (width x height), not as stored
    out = decode(tmp_path / "o" / "phone_overlay.mp4")
    assert len(out) == 5 and out[0].shape == (80, 50, 3)  # shown upright, as players show it
    assert np.array(Image.open(tmp_path / "o" / "phone_masks" / "000000.png")).shape == (80, 50)

    odd = [(rng.random((45, 63, 3)) * 255).astype(np.uint8) for _ in range(3)]
    clip = write_clip(tmp_path / "odd.mkv", [np.pad(f, ((0, 1), (0, 1), (0, 0)), mode="edge") for f in odd])
    threads = torch.get_num_threads()
    rc = main(["predict", str(clip), "--model", tiny_ckpt, "--out", str(tmp_path / "o2"), "--backend", "onnx"])
    assert rc == 0, capsys.readouterr().err
    assert torch.get_num_threads() == threads  # one PyTorch thread while frames overlap in the runtime, then back
    assert len(decode(tmp_path / "o2" / "odd_overlay.mp4")) == 3


def test_odd_frame_size_is_padded_to_even(tmp_path):
    from attnseg.inference.video import _even

    f = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    e = _even(f)
    assert e.shape == (6, 8, 3) and np.array_equal(e[:5, :7], f) and np.array_equal(e[5, :7], f[4])


def test_overlay_lut_is_within_one_of_the_float_blend():
    from attnseg.io import overlay
    from attnseg.inference.video import OverlayLUT

    rng = np.random.default_rng(1)
    rgb = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    lab = rng.integers(0, 11, (30, 40))
    pal = [[int(v) for v in rng.integers(0, 256, 3)] for _ in range(11)]
    for alpha in (0.0, 0.3, 0.5, 1.0):
        ref = np.asarray(overlay(rgb, lab, pal, alpha), np.int16)
        assert np.abs(OverlayLUT(pal, alpha)(rgb, lab).astype(np.int16) - ref).max() <= 1


def test_bad_video_is_one_line_and_leaves_nothing(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    good = tmp_path / "good.mp4"
    write_clip(good, [np.zeros((32, 48, 3), np.uint8)] * 2)
    rc = main(["predict", str(bad), str(good), "--model", tiny_ckpt, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.mp4" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good_overlay.mp4"]  # no temp, no partial


def test_truncated_video_keeps_no_partial_output(tmp_path, tiny_ckpt, capsys):
    rng = np.random.default_rng(2)
    clip = write_clip(tmp_path / "c.mp4", [(rng.random((64, 96, 3)) * 255).astype(np.uint8) for _ in range(30)])
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # moov atom at the end: unreadable
    rc = main(["predict", str(cut), "--model", tiny_ckpt, "--out", str(tmp_path / "o")])
    assert rc == 1 and "cut.mp4" in capsys.readouterr().err
    assert not any(p.name.endswith(".mp4") for p in (tmp_path / "o").iterdir())


def test_existing_output_is_reported_as_replaced(tmp_path, tiny_ckpt, capsys):
    clip = write_clip(tmp_path / "a.mp4", [np.zeros((32, 48, 3), np.uint8)] * 2)
    args = ["predict", str(clip), "--model", tiny_ckpt, "--out", str(tmp_path / "o")]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "replaced 1 existing output" in capsys.readouterr().out


def test_onnx_graph_keeps_the_working_size(tmp_path, tiny_ckpt):
    """An exported graph records the checkpoint's short side, so predict runs it at the same size."""
    from attnseg.deploy.backends.onnxruntime import OnnxModel
    from attnseg.deploy.export import export_onnx

    model = attnseg.load_model(tiny_ckpt)
    path = export_onnx(model, tmp_path / "m.onnx", dynamic=True)
    onnx_model = OnnxModel(path)
    assert onnx_model.meta["short_side"] == 48
    assert attnseg.Segmenter(onnx_model).size == attnseg.Segmenter(model).size == 48


def test_missing_pyav_is_one_line(tmp_path, tiny_ckpt, capsys, monkeypatch):
    import builtins

    clip = write_clip(tmp_path / "a.mp4", [np.zeros((32, 48, 3), np.uint8)] * 2)
    real = builtins.__import__

    def no_av(name, *a, **k):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_av)
    rc = main(["predict", str(clip), "--model", tiny_ckpt, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "attnseg[video]" in err and len(err.splitlines()) == 1


def test_a_stream_that_changes_size_is_scaled_to_its_first_frames_size(tmp_path, tiny_ckpt, capsys):
    """An adaptive stream switching quality (320x240, then 640x480): the later frames are scaled to the first
    frame's size, said once, and every frame is written."""
    rng = np.random.default_rng(0)
    small = [(rng.random((240, 320, 3)) * 255).astype(np.uint8) for _ in range(3)]
    large = [(rng.random((480, 640, 3)) * 255).astype(np.uint8) for _ in range(4)]
    clip = tmp_path / "switch.ts"
    parts = [write_clip(tmp_path / f"{i}.ts", f, rate=25, container="mpegts").read_bytes()
             for i, f in enumerate((small, large))]
    clip.write_bytes(b"".join(parts))  # MPEG-TS segments concatenate, as an adaptive stream's do
    assert {f.shape for f in decode(clip)} == {(240, 320, 3), (480, 640, 3)}  # the input really changes size
    out = tmp_path / "out"
    rc = main(["predict", str(clip), "--model", tiny_ckpt, "--out", str(out), "--save-masks", "--backend", "eager"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Traceback" not in captured.err
    notes = [ln for ln in captured.err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "change size mid-stream (320x240 -> 640x480 at frame 3)" in notes[0], captured.err
    written = decode(out / "switch_overlay.mp4")
    assert len(written) == 7 and {f.shape for f in written} == {(240, 320, 3)}
    assert len(list((out / "switch_masks").glob("*.png"))) == 7


def test_a_rerun_on_a_shorter_clip_replaces_the_masks_folder_whole(tmp_path, tiny_ckpt, capsys):
    rng = np.random.default_rng(1)
    frames = [(rng.random((64, 96, 3)) * 255).astype(np.uint8) for _ in range(7)]
    out = tmp_path / "out"
    write_clip(tmp_path / "clip.mp4", frames)
    assert main(["predict", str(tmp_path / "clip.mp4"), "--model", tiny_ckpt, "--out", str(out), "--save-masks"]) == 0
    assert len(list((out / "clip_masks").iterdir())) == 7
    capsys.readouterr()
    write_clip(tmp_path / "clip.mp4", frames[:3])  # the same name, a shorter clip
    assert main(["predict", str(tmp_path / "clip.mp4"), "--model", tiny_ckpt, "--out", str(out), "--save-masks"]) == 0
    msg = capsys.readouterr().out
    assert sorted(p.name for p in (out / "clip_masks").iterdir()) == [f"{i:06d}.png" for i in range(3)]
    assert "the earlier run's 7 frame mask(s) replaced" in msg and "replaced 2 existing output(s)" in msg, msg
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_video_overlaps_calls_that_share_the_threads_only_in_a_graph_runtime():
    from attnseg.deploy.backends.onnxruntime import call_threads
    from attnseg.inference.video import overlapping_calls

    assert overlapping_calls("eager", 8) == 1  # one call with the model's own threads
    assert [overlapping_calls("onnx", t) for t in (1, 2, 3, 16)] == [1, 2, 3, 4]
    assert overlapping_calls("openvino", 2) == 2
    before = torch.get_num_threads()
    try:  # no --threads: PyTorch's, one per core by default (a 16-core machine runs 4 calls of 4 threads)
        torch.set_num_threads(16)
        assert (overlapping_calls("onnx", None), call_threads(None, 4)) == (4, 4)
        torch.set_num_threads(2)
        assert (overlapping_calls("onnx", None), call_threads(None, 2)) == (2, 1)
    finally:
        torch.set_num_threads(before)
    assert [call_threads(t, c) for t, c in ((8, 4), (3, 2), (2, 4), (6, 1), (None, 1))] == [2, 1, 1, 6, None]

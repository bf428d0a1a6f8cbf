"""`attnseg predict`: images, folders and videos in; label maps, overlays and overlay videos out."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import attnseg

from ..io import MAX_LABELS, ImageReadError, WriteFailed
from ..inference import pipeline
from ..inference.outputs import output_files
from ..inference.pipeline import PlanError, is_uri
from ..pretrained import default_model
from ..inference.segmenter import scaled_size
from ..inference.video import VideoReadError, _require_av, is_video, overlapping_calls, segment_video, video_outputs
from ..worksize import WorkSizeError
from . import options
from .common import (CLIError, check_device, check_onnx_size, check_out_dir, first_line,
                     inference_config, is_language_driven, load_model_arg, read_labels, start_ray)


def plan_outputs(inputs: list[str], out: Path) -> list[tuple[Path, Path]]:
    """inference.pipeline.plan_outputs, its refusals as one-line CLI errors."""
    try:
        return pipeline.plan_outputs(inputs, out)
    except PlanError as e:
        raise CLIError(str(e)) from None


def add_arguments(verb: str, p):
    p.add_argument("inputs", nargs="+", help="image files, folders or videos")
    options.add_model(p, required=False)
    options.add_out(p, default="outputs", help="output folder (default: outputs)")
    options.add_size(p, options.short_side, "auto",
                     "short side to run at: auto (default: the size the model was trained at, as its checkpoint "
                     "records; 512 if it records none), native (the image's own resolution) or N pixels; the label "
                     "map always comes back at the image's size. Small images are upscaled to it (an 8x8 icon runs "
                     "as a 540x540 image: it costs as much as a photo; images of one size run --batch at a time); "
                     "the result is then fitted to --max-work-pixels")
    options.add_inference_mode(p)
    p.add_argument("--alpha", type=options.float_range(0.0, 1.0), default=0.5, help="overlay opacity in [0, 1]")
    options.add_max_pixels(p, None, "refuse images with more pixels than this, read from the header before "
                                    "decoding (default 250e6)")
    options.add_work_limit(p)
    options.add_device(p)
    options.add_isr(p)
    options.add_backend(p)
    options.add_labels(p)
    options.add_threads(p)
    options.add_dtype(p)
    p.add_argument("-v", "--verbose", action="store_true", help="say which backend and precision run")
    p.add_argument("--save-masks", action="store_true",
                   help="videos: also write one label PNG per frame (NAME_masks/000000.png, ...)")
    options.add_engine(p, "images are segmented")
    options.add_overwrite(p, "--engine ray: redo images whose outputs an earlier run finished (default: skip "
                             "them, so running a stopped job again does only the rest)")
    options.add_batch(p, 256, 4, "images of one size and eager video frames per forward pass (default 4; a graph "
                                 "runtime takes a frame a call, 2-4 calls at once); videos become "
                                 "NAME_overlay.mp4 (H.264, no audio) and need PyAV: pip install 'attnseg[video]'")
    return cmd_predict


def cmd_predict(args) -> int:
    out = Path(args.out)
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = plan_outputs(args.inputs, out)
    videos = [f for f, _ in plan if is_video(f)]
    if args.engine == "ray":
        return _predict_on_ray(args, plan, videos)
    if any(is_uri(f) for f, _ in plan):
        raise CLIError(f"{next(f for f, _ in plan if is_uri(f))}: URLs are read by --engine ray; download the "
                       "images, or add --engine ray")
    if videos:
        try:
            _require_av()
        except ImportError as e:
            raise CLIError(f"{videos[0]}: {e}") from None
    calls = overlapping_calls(args.backend, args.threads) if videos else 1
    seg, palette, kw = _segmenter(args, callers=calls)
    calls = overlapping_calls(getattr(seg.model, "backend", "eager"), args.threads)  # auto may have chosen eager
    check_out_dir(out)
    run = _Run(seg, palette, kw, args, quiet=len(plan) < 2 or not sys.stderr.isatty() or bool(videos),
               video_calls=calls)
    for f, base in tqdm(plan, unit="img", disable=run.quiet):
        if run.stopped is not None:
            break
        run.video(f, base) if is_video(f) else run.image(f, base)
    if run.pending and run.stopped is None:
        run.flush()
    if run.stopped is not None:
        print(f"error: {run.stopped}; stopped: the files written so far are complete", file=sys.stderr)
        return 1
    ok_videos = len(set(videos) - set(run.failed))
    ok = len(plan) - len(run.failed) - ok_videos
    what = ([f"{ok} label map(s) and overlay(s)"] if ok or not ok_videos else []) + \
        ([f"{ok_videos} overlay video(s)" + (" and their frame masks" if args.save_masks else "")] if ok_videos else [])
    print(f"wrote {' and '.join(what)} to {out}" + (f" (replaced {run.replaced} existing output(s))"
                                                    if run.replaced else "")
          + (f"; {len(run.failed)} failed: " + ", ".join(map(str, run.failed)) if run.failed else ""))
    return 1 if run.failed else 0


def _predict_on_ray(args, plan, videos) -> int:
    """--engine ray: the same plan and outputs, run by actors on a Ray cluster (ray_engine.predict)."""
    from functools import partial

    from ..ray_engine.predict import predict

    if videos:
        raise CLIError(f"{videos[0]}: --engine ray segments images; predict videos without it")
    check_out_dir(Path(args.out))
    _segmenter(args)  # every option checked once, here, before the cluster starts; each actor builds its own
    workers, threads = start_ray(args, f"{len(plan)} image(s)")
    with tqdm(total=len(plan), unit="img", disable=not sys.stderr.isatty()) as bar:
        def done(row):
            bar.update()
            if row["status"] == "failed":
                tqdm.write(f"error: {row['reason']}; skipped", file=sys.stderr)

        summary = predict(plan, partial(_segmenter, args), workers, threads, args.gpus_per_worker, args.batch,
                          args.alpha, args.max_pixels, args.overwrite, on_done=done)
    for line in summary.lines():
        print(line)
    print(f"outputs in {args.out}")
    return 130 if summary.interrupted else (1 if summary.failed else 0)


def _segmenter(args, callers: int = 1):
    """The model, labels and Segmenter the options name: (segmenter, palette, model keyword arguments)."""
    inference = inference_config(args)
    labels = read_labels(args)
    if labels is not None and len(labels) > MAX_LABELS:
        raise CLIError(f"--labels: {len(labels)} labels; at most {MAX_LABELS} (label maps are one byte per pixel)")
    source = args.model or default_model()
    if source is None:
        raise CLIError("no --model given and no default model installed: pass --model NAME_OR_CHECKPOINT "
                       "(attnseg models lists the names)")
    model = load_model_arg(args, check=lambda m: _labels_fit(m, labels, source),  # -v: what runs and why
                           callers=callers, source=source)
    _labels_fit(model, labels, source)  # a graph file: known once opened
    check_onnx_size(model, args, source)
    try:
        seg = attnseg.Segmenter(model, size=args.size, inference=inference, device=args.device)
    except ValueError as e:
        raise CLIError(str(e)) from None
    kw, palette = {}, seg.palette
    if labels is not None:
        kw["labels"] = labels
        seg.class_names = labels
        palette = seg.palette_for_labels(labels)
    return seg, palette, kw


def _labels_fit(model, labels, name) -> None:
    """--labels only for a language-driven model, and an LSeg model saved without class names needs them."""
    if labels is not None and not is_language_driven(model):
        raise CLIError(f"--labels needs a language-driven model (lseg-*); {name} has fixed classes")
    if labels is None and is_language_driven(model) and not getattr(model, "default_labels", None):
        raise CLIError("this LSeg model needs --labels \"sky, road, car, other\" (or --labels-file FILE)")


class _Run:
    """One local predict run over inference.pipeline: images are read in turn and run in batches of --batch
    images (images of one size share a forward pass of at most BATCH_PIXELS pixels); every failure is one line
    and the others go on; a write that no later write can escape (a full disk) stops the run (`stopped`)."""

    def __init__(self, seg, palette, kw, args, quiet: bool, video_calls: int = 1):
        self.seg, self.palette, self.kw, self.args, self.quiet = seg, palette, kw, args, quiet
        self.video_calls = video_calls
        self.failed: list = []
        self.replaced = 0
        self.stopped: str | None = None
        self.pending: list[pipeline.Item] = []

    def report(self, f, reason: str) -> None:
        self.failed.append(f)
        tqdm.write(f"error: {reason}; skipped", file=sys.stderr)

    def video(self, f, base) -> None:
        if self.pending:
            self.flush()
        try:
            self.replaced += _predict_video(self.seg, f, base, self.args, self.palette, self.kw, self.video_calls)
        except (VideoReadError, ImageReadError, WriteFailed, WorkSizeError, MemoryError, RuntimeError) as e:
            if isinstance(e, WriteFailed) and e.stop:
                self.failed.append(f)
                self.stopped = self.stopped or str(e)
                return
            msg = first_line(e)
            self.report(f, msg if isinstance(e, (ImageReadError, WriteFailed)) else f"{f}: {msg}")

    def image(self, f, base) -> None:
        item = pipeline.read_item(str(f), str(base), self.args.max_pixels)
        for note in item.notes:
            tqdm.write(f"note: {note}", file=sys.stderr)
        if item.rgb is not None:
            try:
                work = self.seg.working_size(*item.rgb.shape[:2])
            except WorkSizeError:
                work = None  # said as the image's failure when its batch runs
            asked = scaled_size(*item.rgb.shape[:2], self.seg.size)
            if work is not None and work != asked:
                tqdm.write(f"note: {f} runs at {work[1]}x{work[0]}, not {asked[1]}x{asked[0]}, to stay within the "
                           f"working-size limits (--max-work-pixels {self.seg.inference.work.max_pixels})",
                           file=sys.stderr)
        self.pending.append(item)
        if len(self.pending) >= self.args.batch:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        for item, r in zip(batch, pipeline.run_batch(self.seg, batch, self.kw, self.palette, self.args.alpha)):
            if r.status == "ok":
                self.replaced += r.replaced
                if not self.quiet:  # no progress bar: a line per image
                    _say_classes(item, r.label, self.seg)
            elif r.stop:
                self.failed.append(r.src)
                self.stopped = self.stopped or r.reason  # said once, at the end
            elif self.stopped is None:
                self.report(r.src, r.reason)
            else:
                self.failed.append(r.src)


def _say_classes(item, label, seg) -> None:
    """One line for an image written: its label map and the three largest classes."""
    counts = np.bincount(label.ravel(), minlength=1)
    top = counts.argsort()[::-1][:3]
    names = seg.class_names or []
    desc = ", ".join(f"{names[i] if i < len(names) else i} {100 * counts[i] / label.size:.0f}%" for i in top
                     if counts[i])
    print(f"{item.src} -> {output_files(Path(item.base))[0]} ({desc})")


def _predict_video(seg, f: Path, base: Path, args, palette, kw, calls: int = 1) -> int:
    """One video through the decode -> infer -> encode pipeline; prints frames/s; returns files replaced."""
    dst, masks = video_outputs(base)
    earlier = sum(1 for _ in masks.glob("*.png")) if args.save_masks and masks.is_dir() else None
    replaced = int(dst.exists()) + int(earlier is not None)  # the video, and the masks folder as a whole
    with tqdm(unit="frame", desc=f.name, disable=not sys.stderr.isatty(), mininterval=0.5) as bar:
        r = segment_video(seg, f, dst, masks_dir=masks if args.save_masks else None, batch=args.batch,
                          alpha=args.alpha, palette=palette, max_pixels=args.max_pixels, progress=bar.update,
                          workers=calls, **kw)
    h, w = r["size"]
    print(f"{f} -> {dst}" + (f" and {masks}/" if args.save_masks else "") +
          f" ({r['frames']} frames of {w}x{h} in {r['seconds']:.1f} s: {r['fps']:.1f} frames/s end to end"
          + (f"; the earlier run's {earlier} frame mask(s) replaced" if earlier is not None else "") + ")")
    return replaced

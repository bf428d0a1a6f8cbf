"""`attnseg predict`: images, folders and videos in; label maps, overlays and overlay videos out."""
from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import attnseg

from ..io import IMAGE_EXTENSIONS, MAX_LABELS, ImageNote, ImageReadError, WriteFailed, read_image
from ..inference.outputs import output_files, write_prediction
from ..pretrained import default_model
from ..inference.segmenter import BATCH_PIXELS, scaled_size
from ..inference.video import VIDEO_EXTENSIONS, VideoReadError, _require_av, is_video, segment_video, video_outputs
from ..ray_engine.predict import is_uri, list_uri
from ..worksize import WorkSizeError
from . import options
from .common import (CLIError, check_device, check_onnx_size, check_out_dir, first_line,
                     inference_config, is_language_driven, load_model_arg, read_labels, start_ray)


def plan_outputs(inputs: list[str], out: Path) -> list[tuple[Path, Path]]:
    """(input image, output base path without extension) for every image the inputs name.

    Outputs mirror each image's path under the folder argument it was found in (`OUT/SUB/NAME.png`, a
    file argument gives `OUT/NAME.png`). Images whose names differ only by extension keep it
    (`OUT/NAME.jpg.png`); the same relative path from two arguments goes under each argument's folder
    name (`OUT/a/NAME.png`, `OUT/b/NAME.png`). The output folder is never walked as input, an output
    never replaces an input, and two inputs never share an output (refused if no rule separates them).
    """
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; name a folder for the label maps and overlays")
    out_r = out.resolve()
    entries: list[tuple[Path, Path, str]] = []  # (file, path relative to its argument, the argument's name)
    under_out: list[Path] = []  # found under --out: taken for outputs, skipped
    for s in inputs:
        p = Path(s)
        if is_uri(s):
            try:
                found = list_uri(s, IMAGE_EXTENSIONS)
            except (OSError, ValueError, ImportError) as e:
                raise CLIError(f"input {s}: {first_line(e)}") from None
            entries += [(f, rel, Path(s.rstrip("/")).name or "input") for f, rel in found]
        elif p.is_dir():
            if p.resolve() == out_r:
                raise CLIError(f"--out {out} is the input folder {s}: the outputs would be mixed with (and could "
                               "replace) the images; choose another --out")
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS and f.is_file():
                    if out_r in f.resolve().parents:
                        under_out.append(f)
                    else:
                        entries.append((f, f.relative_to(p), p.resolve().name or "input"))
        elif p.is_file():
            entries.append((p, Path(p.name), p.resolve().parent.name or "input"))
        elif p.exists():
            raise CLIError(f"input {s} is neither a file nor a folder")
        else:
            raise CLIError(f"input not found: {s}")
    if not entries and under_out:
        raise CLIError(f"the {len(under_out)} image(s) or video(s) in {', '.join(inputs)} lie inside --out {out}, "
                       "whose files are taken for outputs and skipped; choose an --out outside the inputs")
    if not entries:
        raise CLIError(f"no images or videos found in {', '.join(inputs)} (looked for "
                       f"{', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)}"
                       + (f"; {out} itself is skipped" if any(Path(i).resolve() in out_r.parents for i in inputs)
                          else "") + ")")

    def key(b: Path) -> str:
        return str(b).lower()  # case-insensitive file systems

    bases = [rel.with_suffix("") for _, rel, _ in entries]
    for rule in ("extension", "argument"):
        groups: dict[str, list[int]] = {}
        for i, b in enumerate(bases):
            groups.setdefault(key(b), []).append(i)
        for idx in (g for g in groups.values() if len(g) > 1):
            for i in idx:
                _, rel, arg = entries[i]
                if rule == "extension" and len({entries[j][2] for j in idx}) == 1:
                    bases[i] = rel
                elif rule == "argument":
                    bases[i] = Path(arg) / bases[i]
    seen: dict[str, Path] = {}
    for (f, _, _), b in zip(entries, bases):
        if key(b) in seen:
            raise CLIError(f"{seen[key(b)]} and {f} would write the same output {out / b}.png; "
                           "predict them in separate runs (or with separate --out folders)")
        seen[key(b)] = f
    plan = [(f, out / b) for (f, _, _), b in zip(entries, bases)]
    inputs_r = {Path(f).resolve() for f, _ in plan if not is_uri(f)}
    for _, b in plan:
        for o in _all_outputs(b):
            if o.resolve() in inputs_r:
                raise CLIError(f"output {o} would replace an input image; choose another --out")
    return plan


def _all_outputs(base: Path) -> tuple[Path, ...]:
    return output_files(base) + video_outputs(base)


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
    options.add_batch(p, 256, 4, "images of one size and video frames per forward pass (default 4); videos become "
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
        onnx = args.backend == "onnx" or str(args.model).endswith(".onnx")
        args.video_workers = max(1, min(args.threads or 2, 4)) if onnx else 0  # see onnx_session
    seg, palette, kw = _segmenter(args)
    check_out_dir(out)
    run = _Run(seg, palette, kw, args, quiet=len(plan) < 2 or not sys.stderr.isatty() or bool(videos))
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
    _segmenter(copy.copy(args))  # every option checked once, here, before the cluster starts; each actor builds
    # its own from the options as given (building resolves some of them in place, e.g. bakes --isr into a graph)
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


def _segmenter(args):
    """The model, labels and Segmenter the options name: (segmenter, palette, model keyword arguments)."""
    inference = inference_config(args)
    labels = read_labels(args)
    if labels is not None and len(labels) > MAX_LABELS:
        raise CLIError(f"--labels: {len(labels)} labels; at most {MAX_LABELS} (label maps are one byte per pixel)")
    args.model = args.model or default_model()
    if args.model is None:
        raise CLIError("no --model given and no default model installed: pass --model NAME_OR_CHECKPOINT "
                       "(attnseg models lists the names)")
    model = load_model_arg(args)  # -v: says what runs and why
    check_onnx_size(model, args)
    try:
        seg = attnseg.Segmenter(model, size=args.size, inference=inference, device=args.device)
    except ValueError as e:
        raise CLIError(str(e)) from None
    kw, palette = {}, seg.palette
    if labels is not None:
        if not is_language_driven(model):
            raise CLIError(f"--labels needs a language-driven model (lseg-*); {args.model} has fixed classes")
        kw["labels"] = labels
        seg.class_names = labels
        palette = seg.palette_for_labels(labels)
    elif is_language_driven(model) and not getattr(model, "default_labels", None):
        raise CLIError("this LSeg model needs --labels \"sky, road, car, other\" (or --labels-file FILE)")
    return seg, palette, kw


class _Run:
    """One predict run: images of one size are batched (--batch images, at most BATCH_PIXELS pixels: a batch of
    huge photos needs no more memory than the largest alone), every failure is one line and the others go on;
    a write that no later write can escape (a full disk) stops the run (`stopped`)."""

    def __init__(self, seg, palette, kw, args, quiet: bool):
        self.seg, self.palette, self.kw, self.args, self.quiet = seg, palette, kw, args, quiet
        self.failed: list = []
        self.replaced = 0
        self.stopped: WriteFailed | None = None
        self.pending: list = []  # (file, output base, rgb) of one size

    def report(self, f, e) -> None:
        self.failed.append(f)
        if isinstance(e, WriteFailed) and e.stop:
            self.stopped = self.stopped or e  # said once, at the end
            return
        msg = first_line(e)
        tqdm.write(f"error: {msg if isinstance(e, (ImageReadError, WriteFailed)) else f'{f}: {msg}'}; skipped",
                   file=sys.stderr)

    def video(self, f, base) -> None:
        if self.pending:
            self.flush()
        try:
            self.replaced += _predict_video(self.seg, f, base, self.args, self.palette, self.kw)
        except (VideoReadError, ImageReadError, WriteFailed, WorkSizeError, MemoryError, RuntimeError) as e:
            self.report(f, e)

    def image(self, f, base) -> None:
        try:
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", ImageNote)
                rgb = read_image(f, self.args.max_pixels)
            work = self.seg.working_size(*rgb.shape[:2])
        except (ImageReadError, WorkSizeError) as e:
            return self.report(f, e)
        for n in notes:
            tqdm.write(f"note: {n.message}", file=sys.stderr)
        asked = scaled_size(*rgb.shape[:2], self.seg.size)
        if work != asked:
            tqdm.write(f"note: {f} runs at {work[1]}x{work[0]}, not {asked[1]}x{asked[0]}, to stay within the "
                       f"working-size limits (--max-work-pixels {self.seg.inference.work.max_pixels})", file=sys.stderr)
        pixels = sum(r.shape[0] * r.shape[1] for _, _, r in self.pending) + rgb.shape[0] * rgb.shape[1]
        if self.pending and (self.pending[0][2].shape != rgb.shape or len(self.pending) >= self.args.batch
                             or pixels > BATCH_PIXELS):
            self.flush()
        self.pending.append((f, base, rgb))

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        try:
            maps = self.seg.predict_images([rgb for _, _, rgb in batch], **self.kw)
        except (MemoryError, RuntimeError, WorkSizeError) as e:
            for f, _, _ in batch:
                self.report(f, e if isinstance(e, WorkSizeError) else RuntimeError(f"{type(e).__name__}: "
                                                                                    f"{first_line(e)}"))
            return
        for (f, base, rgb), label in zip(batch, maps):
            if self.stopped is None:
                self.replaced += _write_prediction(f, base, rgb, label, self.seg, self.palette, self.args.alpha,
                                                   self.quiet, self.report)


def _write_prediction(f, base, rgb, label, seg, palette, alpha, print_each, report) -> int:
    """Write one image's label map and overlay (outputs.write_prediction); returns the number of files
    replaced. A write that fails is reported (one line) and the image counted as failed."""
    try:
        replaced = write_prediction(base, rgb, label, palette, seg.class_names, alpha)
    except WriteFailed as e:
        report(f, e)
        return 0
    if print_each:  # no progress bar: a line per image
        counts = np.bincount(label.ravel(), minlength=1)
        top = counts.argsort()[::-1][:3]
        names = seg.class_names or []
        desc = ", ".join(f"{names[i] if i < len(names) else i} {100 * counts[i] / label.size:.0f}%" for i in top
                         if counts[i])
        print(f"{f} -> {output_files(base)[0]} ({desc})")
    return replaced


def _predict_video(seg, f: Path, base: Path, args, palette, kw) -> int:
    """One video through the decode -> infer -> encode pipeline; prints frames/s; returns files replaced."""
    dst, masks = video_outputs(base)
    earlier = sum(1 for _ in masks.glob("*.png")) if args.save_masks and masks.is_dir() else None
    replaced = int(dst.exists()) + int(earlier is not None)  # the video, and the masks folder as a whole
    with tqdm(unit="frame", desc=f.name, disable=not sys.stderr.isatty(), mininterval=0.5) as bar:
        r = segment_video(seg, f, dst, masks_dir=masks if args.save_masks else None, batch=args.batch,
                          alpha=args.alpha, palette=palette, max_pixels=args.max_pixels, progress=bar.update,
                          workers=max(getattr(args, "video_workers", 1), 1), **kw)
    h, w = r["size"]
    print(f"{f} -> {dst}" + (f" and {masks}/" if args.save_masks else "") +
          f" ({r['frames']} frames of {w}x{h} in {r['seconds']:.1f} s: {r['fps']:.1f} frames/s end to end"
          + (f"; the earlier run's {earlier} frame mask(s) replaced" if earlier is not None else "") + ")")
    return replaced

"""`attnseg <verb>`: the command-line interface."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def is_language_driven(model) -> bool:
    from .models.lseg import is_language_driven as f

    return f(model)


class CLIError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `attnseg predict: error: argument --alpha: ...` and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(s: str, kind=float):
    """A finite float, or an integer (also written 4e7)."""
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or (kind is int and not v.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a finite {'integer' if kind is int else 'number'}, got {s!r}")
    return int(v) if kind is int else v


def int_range(lo: int, hi: int | None = None):
    def parse(s: str) -> int:
        v = _number(s, int)
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range; expected an integer in [{lo}, {hi if hi else 'inf'})")
        return v
    return parse


def float_range(lo: float, hi: float, lo_open: bool = False):
    def parse(s: str) -> float:
        v = _number(s, float)
        if v < lo or (lo_open and v == lo) or v > hi:
            raise argparse.ArgumentTypeError(f"{s} is out of range; expected a number in {'(' if lo_open else '['}{lo}, {hi}]")
        return v
    return parse


def _size(s: str):
    """--size: auto (the model's working size), native, or a short side in pixels."""
    if s.lower() in ("auto", "native"):
        return s.lower()
    return int_range(8, 16384)(s)


def _add_work_limit(p: argparse.ArgumentParser) -> None:
    from .worksize import MAX_WORK_PIXELS, MAX_WORK_SIDE, MIN_WORK_SIDE

    p.add_argument("--max-work-pixels", type=int_range(MIN_WORK_SIDE ** 2), default=MAX_WORK_PIXELS,
                   help=f"most pixels one model input may have after resizing (default {MAX_WORK_PIXELS:,} = "
                        f"2048x2048); larger working sizes are shrunk to fit, long sides capped at {MAX_WORK_SIDE}; "
                        f"aspect ratios beyond {MAX_WORK_SIDE // MIN_WORK_SIDE}:1 are refused")


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, default=None,
                   help="shipped model name, checkpoint file/dir, or hub id (org/name)")
    p.add_argument("--arch", default=None,
                   help="architecture for checkpoints that do not record it (official .pth), e.g. segformer-b2")
    p.add_argument("--text-encoder", default=None,
                   help="LSeg: text encoder spec overriding the checkpoint's: minilm, clip:ID_OR_DIR, hf:DIR")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field when loading, e.g. predict=mask for SANet (repeatable)")


def _load(args):
    import attnseg

    try:
        if str(args.model).endswith(".onnx"):
            from .export import OnnxModel

            if not Path(args.model).is_file():
                raise CLIError(f"--model {args.model}: file not found")
            return OnnxModel(args.model, *_onnx_session(args))
        over = {"text_encoder": args.text_encoder} if getattr(args, "text_encoder", None) else {}
        over.update(_model_options(getattr(args, "model_option", [])))
        model = attnseg.load_model(args.model, model=args.arch, device=getattr(args, "device", "cpu"), **over)
        if is_language_driven(model):
            model.text_encoder  # noqa: B018 - built now: a missing extra is one line here, not a traceback later
    except (ValueError, OSError, ImportError) as e:
        raise CLIError(_first_line(e)) from None
    return _maybe_onnx(model, args)


def _onnx_session(args) -> tuple[int | None, bool]:
    """onnxruntime (threads, spinning): a video run calls one session from `video_workers` threads, each run
    on one non-spinning thread (batches overlap each other, decoding and encoding); else --threads."""
    if getattr(args, "video_workers", 1) > 1:
        return 1, False
    return getattr(args, "threads", None), not getattr(args, "video_workers", 0)


def _model_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--model-option expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _maybe_onnx(model, args):
    """--backend onnx on a PyTorch model: export it (with its ISR settings) to a temp file and run that."""
    if getattr(args, "backend", "eager") != "onnx" or not isinstance(model, __import__("torch").nn.Module):
        return model
    import tempfile

    from .export import OnnxModel, export_onnx

    if getattr(args, "isr", None):
        model.set_isr(**parse_isr(args.isr))
        args.isr = None  # baked into the graph
    with tempfile.TemporaryDirectory(prefix="attnseg_onnx_") as tmp:  # the session keeps the graph in memory
        path = Path(tmp) / "model.onnx"
        try:
            export_onnx(model, path)
            return OnnxModel(path, *_onnx_session(args))
        except ImportError as e:
            raise CLIError(str(e)) from None
        except Exception as e:
            raise CLIError(f"--backend onnx: {args.model} could not be exported ({type(e).__name__}: "
                           f"{_first_line(e)}); use --backend eager") from None


def _first_line(e: BaseException) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


def _check_onnx_size(model, args) -> None:
    """A fixed-size ONNX graph runs one input size: say so before any image is read."""
    fixed = getattr(model, "fixed_size", None)
    if not fixed:
        return
    if getattr(args, "mode", "whole") == "slide":
        if tuple(args.crop) != fixed:
            raise CLIError(f"{args.model} is a fixed-size graph ({fixed[0]}x{fixed[1]}); use --crop "
                           f"{fixed[0]}x{fixed[1]} or export with --dynamic")
        return
    raise CLIError(f"{args.model} is a fixed-size graph ({fixed[0]}x{fixed[1]}) and images are resized by their "
                   f"short side; export with --dynamic, or use --mode slide --crop {fixed[0]}x{fixed[1]}")


def cmd_models(args) -> int:
    """Lists the registry from models/param_counts.json: no model is built and torch is not imported."""
    from .param_table import params_at, read_table
    from .pretrained import list_pretrained

    table = read_table()
    print(f"{'name':<20} {'params (M)':>10}  description")
    for name in sorted(table):
        if args.filter and args.filter not in name:
            continue
        n = params_at(table[name]["params"], args.num_classes)
        print(f"{name:<20} {n / 1e6:>10.2f}  {table[name]['description']}")
    shipped = list_pretrained()
    print(f"\nshipped trained weights: {', '.join(shipped) if shipped else 'none yet'}")
    return 0


def plan_outputs(inputs: list[str], out: Path) -> list[tuple[Path, Path]]:
    """(input image, output base path without extension) for every image the inputs name.

    Outputs mirror each image's path under the folder argument it was found in (`OUT/SUB/NAME.png`, a
    file argument gives `OUT/NAME.png`). Images whose names differ only by extension keep it
    (`OUT/NAME.jpg.png`); the same relative path from two arguments goes under each argument's folder
    name (`OUT/a/NAME.png`, `OUT/b/NAME.png`). The output folder is never walked as input, an output
    never replaces an input, and two inputs never share an output (refused if no rule separates them).
    """
    from .io import IMAGE_EXTENSIONS
    from .video import VIDEO_EXTENSIONS

    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; name a folder for the label maps and overlays")
    out_r = out.resolve()
    entries: list[tuple[Path, Path, str]] = []  # (file, path relative to its argument, the argument's name)
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            if p.resolve() == out_r:
                raise CLIError(f"--out {out} is the input folder {s}: the outputs would be mixed with (and could "
                               "replace) the images; choose another --out")
            for f in sorted(p.rglob("*")):
                if (f.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS and f.is_file()
                        and out_r not in f.resolve().parents):
                    entries.append((f, f.relative_to(p), p.resolve().name or "input"))
        elif p.is_file():
            entries.append((p, Path(p.name), p.resolve().parent.name or "input"))
        elif p.exists():
            raise CLIError(f"input {s} is neither a file nor a folder")
        else:
            raise CLIError(f"input not found: {s}")
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
    inputs_r = {f.resolve() for f, _ in plan}
    for _, b in plan:
        for o in _all_outputs(b):
            if o.resolve() in inputs_r:
                raise CLIError(f"output {o} would replace an input image; choose another --out")
    return plan


def output_files(base: Path) -> tuple[Path, Path]:
    """The label map and the overlay written for one image."""
    return base.with_name(base.name + ".png"), base.with_name(base.name + "_overlay.jpg")


def _all_outputs(base: Path) -> tuple[Path, ...]:
    from .video import video_outputs

    return output_files(base) + video_outputs(base)


def _check_out_dir(out: Path) -> None:
    if out.is_symlink() and not out.exists():
        raise CLIError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; create that "
                       "folder or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create --out {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out} is not writable; choose another folder")


def _check_file_out(path: str, flag: str = "--out") -> Path:
    """An output file path: not a folder, in a folder that exists or can be made and is writable."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise CLIError(f"{flag} {path} is a folder; name a file")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag} {path}: cannot create {p.parent}: {e.strerror or e}") from None
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: folder {p.parent} is not writable")
    return p


def _amp_dtype(args, model):
    """--dtype: None for fp32, torch.bfloat16 for bf16 (autocast; eager PyTorch models only)."""
    import torch

    if getattr(args, "dtype", "fp32") == "fp32":
        return None
    if not isinstance(model, torch.nn.Module):
        raise CLIError("--dtype bf16 runs eager PyTorch models; an ONNX graph runs in its own precision")
    return torch.bfloat16


def check_device(name: str) -> str:
    import torch

    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {name!r}: expected cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if kind == "cuda" and ":" in name:
        try:
            i = int(name.split(":")[1])
        except ValueError:
            raise CLIError(f"--device {name!r}: expected cuda:N") from None
        if not 0 <= i < torch.cuda.device_count():
            raise CLIError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CLIError("--device mps: MPS is not available here; use --device cpu")
    return name


def _inference_config(args, scales=None, flip=False):
    from .engine.inference import InferenceConfig, WorkLimit

    stride = args.stride or tuple(max(1, math.ceil(c * 2 / 3)) for c in args.crop)
    work = WorkLimit(max_pixels=args.max_work_pixels)
    try:
        return InferenceConfig(mode=args.mode, crop=args.crop, stride=stride, scales=scales or [1.0], flip=flip,
                               work=work)
    except ValueError as e:
        raise CLIError(f"--stride/--crop: {e}") from None


# predict without --model: the first shipped; serve without --model: each shipped one (the default, the real-time
# SANet, the best LSeg; lseg-effnet-lite0-camvid still loads by name)
DEFAULT_MODELS = ("allmlp-effnet-lite2-camvid", "sanet-effnet-lite0-camvid", "lseg-effnet-lite2-camvid")


def default_model_source() -> str | None:
    from .pretrained import list_pretrained

    shipped = list_pretrained()
    for name in DEFAULT_MODELS:
        if name in shipped:
            return name
    return shipped[0] if shipped else None


def cmd_predict(args) -> int:
    import warnings

    from tqdm import tqdm

    import attnseg
    from .engine.inference import WorkSizeError
    from .io import MAX_LABELS, ImageNote, ImageReadError, WriteFailed, read_image
    from .segmenter import scaled_size

    check_device(args.device)
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    out = Path(args.out)
    plan = plan_outputs(args.inputs, out)
    from .video import VideoReadError, _require_av, is_video

    videos = [f for f, _ in plan if is_video(f)]
    if videos:
        try:
            _require_av()
        except ImportError as e:
            raise CLIError(f"{videos[0]}: {e}") from None
        onnx = args.backend == "onnx" or str(args.model).endswith(".onnx")
        args.video_workers = max(1, min(args.threads or 2, 4)) if onnx else 0  # see _onnx_session
    inference = _inference_config(args)
    labels = _read_labels(args)
    if labels is not None and len(labels) > MAX_LABELS:
        raise CLIError(f"--labels: {len(labels)} labels; at most {MAX_LABELS} (label maps are one byte per pixel)")
    if args.model is None:
        args.model = default_model_source()
        if args.model is None:
            print("note: no trained default model is shipped yet; running segformer-b0 with RANDOM weights "
                  "(the outputs show the pipeline, not a segmentation). Pass --model CHECKPOINT for real results.",
                  file=sys.stderr)
            model = attnseg.create_model("segformer-b0", num_classes=11)
    if args.model is not None:
        model = _load(args)
    _apply_isr(model, args)
    _check_onnx_size(model, args)
    try:
        seg = attnseg.Segmenter(model, size=args.size, inference=inference, device=args.device,
                                dtype=_amp_dtype(args, model) or __import__("torch").float32)
    except ValueError as e:
        raise CLIError(str(e)) from None
    kw = {}
    palette = seg.palette
    if labels is not None:
        if not is_language_driven(model):
            raise CLIError(f"--labels needs a language-driven model (lseg-*); {args.model} has fixed classes")
        kw["labels"] = labels
        seg.class_names = labels
        palette = seg.palette_for(len(labels))
    elif is_language_driven(model) and not getattr(model, "default_labels", None):
        raise CLIError("this LSeg model needs --labels \"sky, road, car, other\" (or --labels-file FILE)")
    _check_out_dir(out)
    failed, replaced, stopped = [], 0, None
    bar = tqdm(plan, unit="img", disable=len(plan) < 2 or not sys.stderr.isatty() or bool(videos))
    pending: list = []  # (file, output base, rgb): images of one size, run as one batch

    def report(f, e):
        nonlocal stopped
        failed.append(f)
        if isinstance(e, WriteFailed) and e.stop:
            stopped = stopped or e  # disk full (or read-only): no later write can succeed; said once, at the end
            return
        msg = _first_line(e)
        tqdm.write(f"error: {msg if isinstance(e, (ImageReadError, WriteFailed)) else f'{f}: {msg}'}; skipped",
                   file=sys.stderr)

    def flush():
        nonlocal replaced
        batch, pending[:] = list(pending), []
        try:
            labels_ = ([seg.predict(batch[0][2], **kw)] if len(batch) == 1
                       else seg.predict_batch([rgb for _, _, rgb in batch], **kw))
        except (MemoryError, RuntimeError, WorkSizeError) as e:
            for f, _, _ in batch:
                report(f, e if isinstance(e, WorkSizeError) else RuntimeError(f"{type(e).__name__}: {_first_line(e)}"))
            return
        for (f, base, rgb), label in zip(batch, labels_):
            if stopped is None:
                replaced += _write_prediction(f, base, rgb, label, seg, palette, args.alpha, bar.disable, report)

    for f, base in bar:
        if stopped is not None:
            break
        if is_video(f):
            if pending:
                flush()
            try:
                replaced += _predict_video(seg, f, base, args, palette, kw)
            except (VideoReadError, ImageReadError, WriteFailed, WorkSizeError, MemoryError, RuntimeError) as e:
                report(f, e)
            continue
        try:
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", ImageNote)
                rgb = read_image(f, args.max_pixels)
            work = seg.working_size(*rgb.shape[:2])
        except (ImageReadError, WorkSizeError) as e:
            report(f, e)
            continue
        for n in notes:
            tqdm.write(f"note: {n.message}", file=sys.stderr)
        if work != scaled_size(*rgb.shape[:2], seg.size):
            tqdm.write(f"note: {f} runs at {work[1]}x{work[0]}, not {'x'.join(map(str, scaled_size(*rgb.shape[:2], seg.size)[::-1]))}, "
                       f"to stay within the working-size limits (--max-work-pixels {seg.inference.work.max_pixels})",
                       file=sys.stderr)
        if pending and (pending[0][2].shape != rgb.shape or len(pending) >= args.batch):
            flush()
        pending.append((f, base, rgb))
    if pending and stopped is None:
        flush()
    if stopped is not None:
        print(f"error: {stopped}; stopped: the files written so far are complete", file=sys.stderr)
        return 1
    ok_videos = len(set(videos) - set(failed))
    ok = len(plan) - len(failed) - ok_videos
    what = ([f"{ok} label map(s) and overlay(s)"] if ok or not ok_videos else []) + \
        ([f"{ok_videos} overlay video(s)" + (" and their frame masks" if args.save_masks else "")] if ok_videos else [])
    print(f"wrote {' and '.join(what)} to {out}" + (f" (replaced {replaced} existing file(s))"
                                                                 if replaced else "")
          + (f"; {len(failed)} failed: " + ", ".join(map(str, failed)) if failed else ""))
    return 1 if failed else 0


def _write_prediction(f, base, rgb, label, seg, palette, alpha, verbose, report) -> int:
    """Write one image's label map and overlay (each encoded in memory, then atomically); returns the number
    of files replaced. A write that fails is reported (one line) and the image counted as failed."""
    import numpy as np

    from .io import WriteFailed, atomic_save, label_png, overlay

    lab_path, ov_path = output_files(base)
    replaced = lab_path.exists() + ov_path.exists()
    try:
        atomic_save(label_png(label, palette), lab_path)
        atomic_save(overlay(rgb, label, palette, alpha), ov_path, quality=90)
    except WriteFailed as e:
        report(f, e)
        return 0
    if verbose:
        counts = np.bincount(label.ravel(), minlength=1)
        top = counts.argsort()[::-1][:3]
        names = seg.class_names or []
        desc = ", ".join(f"{names[i] if i < len(names) else i} {100 * counts[i] / label.size:.0f}%" for i in top
                         if counts[i])
        print(f"{f} -> {lab_path} ({desc})")
    return replaced


def _predict_video(seg, f: Path, base: Path, args, palette, kw) -> int:
    """One video through the decode -> infer -> encode pipeline; prints frames/s; returns files replaced."""
    from tqdm import tqdm

    from .video import segment_video, video_outputs

    dst, masks = video_outputs(base)
    replaced = int(dst.exists()) + (sum(1 for _ in masks.glob("*.png")) if args.save_masks and masks.is_dir() else 0)
    with tqdm(unit="frame", desc=f.name, disable=not sys.stderr.isatty(), mininterval=0.5) as bar:
        r = segment_video(seg, f, dst, masks_dir=masks if args.save_masks else None, batch=args.batch,
                          alpha=args.alpha, palette=palette, max_pixels=args.max_pixels, progress=bar.update,
                          workers=max(getattr(args, "video_workers", 1), 1), **kw)
    h, w = r["size"]
    print(f"{f} -> {dst}" + (f" and {masks}/" if args.save_masks else "") +
          f" ({r['frames']} frames of {w}x{h} in {r['seconds']:.1f} s: {r['fps']:.1f} frames/s end to end)")
    return replaced


def _read_labels(args) -> list[str] | None:
    """--labels "a, b, c" or --labels-file (one per line); duplicates and empty labels are errors."""
    from .models.text import TextEncoderError, check_labels

    raw = None
    if getattr(args, "labels", None) is not None:
        raw = [s for s in args.labels.split(",")]
    if getattr(args, "labels_file", None):
        try:
            raw = Path(args.labels_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise CLIError(f"cannot read --labels-file {args.labels_file}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise CLIError(f"--labels-file {args.labels_file} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                           f"offset {e.start}); save it as UTF-8, one label per line") from None
        raw = [s for s in raw if s.strip()]
    if raw is None:
        return None
    try:
        return check_labels(raw)
    except TextEncoderError as e:
        raise CLIError(f"--labels: {e}") from None


def _pair(s: str) -> tuple[int, int]:
    parts = s.lower().replace("x", ",").split(",")
    try:
        v = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {s!r}") from None
    if len(v) > 2 or min(v) < 1 or max(v) > 16384:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides in 1..16384, got {s!r}")
    return (v[0], v[0]) if len(v) == 1 else v[:2]


def cmd_train(args) -> int:
    from .data import DatasetError
    from .engine.config import ConfigError, load_config
    from .engine.train import TrainingError, train
    from .io import ImageReadError

    try:
        cfg = load_config(args.config, args.set)
        if args.work_dir:
            cfg.train.work_dir = args.work_dir
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, DatasetError, ImageReadError, TrainingError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    best = result["best"]
    val = (f"best val mIoU {100 * best['mIoU']:.2f} at iteration {best['iter']}" if best["iter"]
           else "no validation run")
    print(f"done at iteration {result['iter']}; {val}; outputs in {cfg.train.work_dir}")
    return 0


def cmd_eval(args) -> int:
    import json

    import torch

    from .data import DatasetError, EvalTransform, build_dataset
    from .engine.distributed import cleanup, init_distributed, is_main
    from .engine.evaluate import evaluate
    from .engine.metrics import format_table
    from .io import ImageReadError, atomic_write_text

    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out:
        _check_file_out(args.out)
    if args.plot:
        _require_plots()
        _check_out_dir(Path(args.plot))
    inference = _inference_config(args, args.scales, args.flip)
    model = _load(args)
    _check_onnx_size(model, args)
    rank, world, _ = init_distributed(torch.device(args.device).type)
    try:
        ds = build_dataset(args.dataset, args.data_root, args.split,
                           EvalTransform(tuple(args.scale) if args.scale else None))
        if args.limit:
            ds.samples = ds.samples[: args.limit]
        k = getattr(model, "num_classes", None)
        model_kwargs = {}
        if is_language_driven(model):  # LSeg: evaluate with --labels (renamed classes) or the dataset's names
            model_kwargs["labels"] = _read_labels(args) or ds.class_names
            if len(model_kwargs["labels"]) != ds.num_classes:
                raise CLIError(f"--labels gives {len(model_kwargs['labels'])} labels for {ds.num_classes} classes")
        elif k is not None and k != ds.num_classes:
            raise CLIError(f"model has {k} classes but dataset {args.dataset} has {ds.num_classes}")
        meta = getattr(model, "meta", {}) or {}
        _apply_isr(model, args)
        m = evaluate(model, ds, inference, meta.get("mean"), meta.get("std"), args.device, ds.num_classes,
                     rank, world, amp_dtype=_amp_dtype(args, model), background=args.fb_background,
                     model_kwargs=model_kwargs)
    except (DatasetError, ImageReadError, ValueError) as e:
        raise CLIError(str(e)) from None
    finally:
        cleanup()
    if is_main():
        print(format_table(m, ds.class_names))
        if args.out:
            atomic_write_text(args.out, json.dumps({"model": str(args.model), "dataset": args.dataset,
                                                    "split": args.split, "model_options": args.model_option,
                                                    "resize": args.scale, "isr": args.isr, "mode": args.mode,
                                                    "scales": args.scales, "flip": args.flip, "dtype": args.dtype,
                                                    "class_names": ds.class_names, **m},
                                                   indent=2))
            print(f"wrote {args.out}")
        if args.plot:
            from .plots import confusion_plot, iou_bars

            names = ds.class_names
            confusion_plot(m["confusion"], names, Path(args.plot) / "confusion.png")
            iou_bars(m["IoU"], names, Path(args.plot) / "per_class_iou.png",
                     f"{Path(str(args.model)).name} on {args.dataset} {args.split}")
            print(f"wrote {args.plot}/confusion.png, {args.plot}/per_class_iou.png")
    return 0


def cmd_score(args) -> int:
    """Score label maps already written (by `attnseg predict` or any tool) against a dataset's ground truth."""
    import json

    from .data import DatasetError, build_dataset
    from .engine.evaluate import ScoreError, score_label_maps
    from .engine.metrics import format_table
    from .io import ImageReadError, atomic_write_text

    if args.out:
        _check_file_out(args.out)
    try:
        ds = build_dataset(args.dataset, args.data_root, args.split, None)
        if args.limit:
            ds.samples = ds.samples[: args.limit]
        m = score_label_maps(args.predictions, ds)
    except (DatasetError, ImageReadError, ScoreError) as e:
        raise CLIError(str(e)) from None
    print(format_table(m, ds.class_names))
    if args.out:
        atomic_write_text(args.out, json.dumps({"predictions": str(args.predictions), "dataset": args.dataset,
                                                "split": args.split, "class_names": ds.class_names, **m}, indent=2))
        print(f"wrote {args.out}")
    return 0


def _require_plots() -> None:
    from .plots import PlotUnavailable, pyplot

    try:
        pyplot()
    except PlotUnavailable as e:
        raise CLIError(str(e)) from None


def cmd_erf(args) -> int:
    import json

    import numpy as np
    import torch
    from PIL import Image

    from .io import IMAGE_EXTENSIONS, ImageReadError, atomic_write_text, read_image
    from .tools.erf import compute_erf, plot_erf, square_sides

    _require_plots()
    _check_file_out(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.model).endswith(".onnx"):
        raise CLIError("erf needs gradients: pass a PyTorch checkpoint or a registered name, not an .onnx graph")
    model = _model_from_name_or_source(args)  # LSeg: its stages and fused decoder features need no labels
    if args.images:
        paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    elif args.dataset:
        from .data import DatasetError, build_dataset

        try:
            paths = [img for img, _ in build_dataset(args.dataset, args.data_root, args.split).samples]
        except DatasetError as e:
            raise CLIError(str(e)) from None
    else:
        raise CLIError("erf needs images: --images DIR or --dataset NAME --data-root PATH")
    paths = paths[: args.num_images]
    if not paths:
        raise CLIError("erf: no images found")
    meta = dict(getattr(model, "meta", None) or {})
    mean = torch.tensor(meta.get("mean") or [123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor(meta.get("std") or [58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    xs = []
    for p in paths:
        try:
            rgb = np.asarray(Image.fromarray(read_image(p)).resize((args.size, args.size), Image.BILINEAR))
        except ImageReadError as e:
            raise CLIError(str(e)) from None
        xs.append((torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() - mean) / std)
    maps = compute_erf(model, xs, progress=sys.stderr.isatty())
    title = f"{getattr(model, 'variant', args.model)}: ERF over {len(xs)} images at {args.size}x{args.size}"
    plot_erf(maps, args.out, title)
    res = {name: square_sides(m) for name, m in maps.items()}
    for name, sides in res.items():
        print(f"{name:<10} side of the centred square holding " + ", ".join(f"{k}: {v} px" for k, v in sides.items()))
    atomic_write_text(Path(args.out).with_suffix(".json"), json.dumps(
        {"model": str(args.model), "images": len(xs), "size": args.size, "square_sides": res}, indent=2))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0


EXPLAIN_MAX_WORK_PIXELS = 1_048_576  # 1024x1024: SegFormer-B0's recorded stage-1 weights are ~250 MB there


def cmd_explain(args) -> int:
    import torch

    from .io import ImageReadError, read_image
    from .tools.explain import explain, save_maps

    _require_plots()
    _check_out_dir(Path(args.out))
    if str(args.model).endswith(".onnx"):
        raise CLIError("explain reads the model's attention layers: pass a PyTorch checkpoint, not an .onnx graph")
    try:
        py, px = (int(v) for v in args.pixel.split(","))
    except ValueError:
        raise CLIError(f"--pixel expects Y,X (row, column in the image), got {args.pixel!r}") from None
    model = _load(args)
    labels = _read_labels(args)
    if is_language_driven(model):
        labels = labels or getattr(model, "default_labels", None)
        if not labels:
            raise CLIError("this LSeg model needs --labels \"sky, road, car, other\"")
    elif labels:
        raise CLIError(f"--labels needs a language-driven model (lseg-*); {args.model} has fixed classes")
    from .engine.inference import InferenceConfig, WorkLimit, WorkSizeError

    seg = __import__("attnseg").Segmenter(model, size=args.size,
                                          inference=InferenceConfig(work=WorkLimit(max_pixels=args.max_work_pixels)))
    try:
        rgb = read_image(args.image)
        x, (H, W) = seg.preprocess(rgb)
    except (ImageReadError, WorkSizeError) as e:
        raise CLIError(f"{args.image}: {e}" if isinstance(e, WorkSizeError) else str(e)) from None
    if not (0 <= py < H and 0 <= px < W):
        raise CLIError(f"--pixel {py},{px} is outside the {H}x{W} image")
    h, w = x.shape[-2:]
    from PIL import Image
    import numpy as np

    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    pixel = (min(int(py * h / H), h - 1), min(int(px * w / W), w - 1))
    with torch.no_grad():
        maps = explain(model, x, pixel, labels)
    if not maps:
        raise CLIError(f"{args.model} has no attention layers to show")
    files = save_maps(maps, small, pixel, args.out, f"{getattr(model, 'variant', args.model)}: attention of pixel "
                                                    f"{py},{px}")
    print(f"wrote {len(files)} PNG(s) to {args.out} ({len(maps)} maps + contact_sheet.png)")
    return 0


def _eval_dataset(args):
    """--dataset/--data-root/--split at native resolution, first --limit samples; one-line errors."""
    from .data import DatasetError, EvalTransform, build_dataset

    try:
        ds = build_dataset(args.dataset, args.data_root, args.split, EvalTransform())
    except DatasetError as e:
        raise CLIError(str(e)) from None
    if args.limit:
        ds.samples = ds.samples[: args.limit]
    return ds


def _fingerprint(src: str) -> str:
    """What a model source names: a file's SHA-256 (a retrained file at the same path is another model), else
    the registry or hub name itself."""
    import hashlib

    p = Path(src)
    if not p.is_file():
        return src
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cmd_robustness(args) -> int:
    import json
    import time

    import attnseg
    from .io import atomic_write_text
    from .tools.corruptions import CORRUPTIONS
    from .tools.robustness import jobs, run, write

    _require_plots()
    check_device(args.device)
    try:
        __import__("cv2")
    except ImportError:
        raise CLIError("robustness needs OpenCV for the corruptions: pip install 'attnseg[robustness]'") from None
    corruptions = CORRUPTIONS if args.corruptions == "all" else [c.strip() for c in args.corruptions.split(",")]
    bad = [c for c in corruptions if c not in CORRUPTIONS]
    if bad:
        raise CLIError(f"--corruptions: unknown {', '.join(bad)}; choose from {', '.join(CORRUPTIONS)}")
    severities = None
    if args.severities:
        try:
            severities = sorted({int(v) for v in args.severities.split(",")})
        except ValueError:
            raise CLIError(f"--severities expects comma-separated integers 1..5, got {args.severities!r}") from None
        if not severities or min(severities) < 1 or max(severities) > 5:
            raise CLIError(f"--severities must be within 1..5, got {args.severities!r}")
    _check_out_dir(Path(args.out))
    ds = _eval_dataset(args)
    models = {}
    for src in args.model:
        try:
            m = attnseg.load_model(src, device=args.device)
        except (ValueError, OSError) as e:
            raise CLIError(str(e)) from None
        k = getattr(m, "num_classes", None)
        if k is not None and k != ds.num_classes:
            raise CLIError(f"{src} has {k} classes but {args.dataset} has {ds.num_classes}")
        name = src
        if Path(src).exists():  # runs/x/final.safetensors -> "x"; a clash keeps the folder too
            p = Path(src)
            name = p.parent.name if p.stem in ("final", "latest", "best") and p.parent.name else p.stem
            if name in models:
                name = f"{p.parent.name}/{p.stem}"
        if name in models:
            raise CLIError(f"--model {src} is given twice")
        models[name] = m
    inference = _inference_config(args)
    # An hour per model on a small CPU: every finished evaluation is appended to a partial file, and a run
    # stopped for any reason continues from it when started again with the same settings and --out.
    partial = Path(args.out) / "robustness.partial.jsonl"
    setting = {"dataset": args.dataset, "data_root": str(Path(args.data_root).resolve()), "split": args.split,
               "limit": args.limit, "mode": args.mode, "crop": list(args.crop),
               "stride": list(args.stride) if args.stride else None}
    marks = {name: _fingerprint(src) for name, src in zip(models, args.model)}
    done = []
    if partial.exists():
        lines = [json.loads(x) for x in partial.read_text().splitlines() if x.strip()]
        if not lines or lines[0].get("setting") != setting:
            raise CLIError(f"{partial} is an unfinished run with other --dataset/--data-root/--split/--limit/--mode "
                           "settings; rerun with those, or choose another --out (or delete that file)")
        done = [r for r in lines[1:] if marks.get(r.get("model")) == r.pop("fingerprint", None)]
        print(f"resuming {partial}: {len(done)} evaluations already done")
    else:
        if (Path(args.out) / "robustness.json").exists():
            print(f"{args.out} holds results of an earlier run: they are replaced when this one finishes")
        atomic_write_text(partial, json.dumps({"setting": setting}) + "\n")
    total = len(jobs(severities, corruptions)) * len(models)
    count, t0 = [len(done)], time.perf_counter()

    def on_row(row):
        with open(partial, "a") as f:
            f.write(json.dumps(dict(row, fingerprint=marks[row["model"]])) + "\n")
        count[0] += 1
        print(f"[{count[0]}/{total}] {row['model']} {row['corruption']} s{row['severity']}: "
              f"mIoU {100 * row['mIoU']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    rows = run(models, ds, inference, args.device, severities, corruptions, progress=sys.stderr.isatty(),
               done=done, on_row=on_row)
    summary = write(rows, args.out, f"{args.dataset} {args.split}: mIoU under corruption")
    partial.unlink()
    print((Path(args.out) / "robustness.md").read_text(), end="")
    for name, s in summary.items():
        print(f"{name}: clean {100 * s['clean']:.2f}  mean corrupted {100 * s['mean']:.2f}  " + "  ".join(
            f"{g} {100 * v:.2f}" for g, v in s["per_group"].items()))
    print(f"wrote {args.out}/robustness.json, .csv, .md and .png")
    return 0


def cmd_fewshot(args) -> int:
    import json

    from .data import DatasetError
    from .data.fewshot import BACKGROUND, DEFAULT_SPLIT, PROTOCOLS, build_benchmark
    from .engine.fewshot import ZeroShotLSeg, evaluate_episodes
    from .io import ImageReadError, atomic_write_text

    model = _load(args)
    if not is_language_driven(model):
        raise CLIError(f"fewshot evaluates language-driven models (lseg-*) zero-shot; {args.model} has fixed classes")
    words = args.label_words or PROTOCOLS[args.protocol]["words"]
    background = args.background or BACKGROUND[words]
    split = args.split or DEFAULT_SPLIT[args.benchmark]
    results = []
    try:
        for fold in args.folds:
            bench = build_benchmark(args.benchmark, args.data_root, args.splits, fold, split, shots=args.shots,
                                    episodes=args.episodes, seed=args.seed, protocol=args.protocol)
            size = args.size or bench.score_size
            r = evaluate_episodes(ZeroShotLSeg(model, size, background, args.device), bench,
                                  progress=sys.stderr.isatty(), score_size=None if args.original_size else size,
                                  words=words)
            r["background"] = background
            print(f"{args.benchmark} {split} fold {fold} ({r['episodes']} episodes, {args.protocol} protocol, "
                  f"{words} label words): "
                  f"mIoU {r['mIoU']:.2f}  FB-IoU {r['FB-IoU']:.2f}"
                  + (f"  ({len(r['unseen_classes'])} class(es) drew no episode: IoU 0)" if r["unseen_classes"] else ""))
            results.append(r)
    except (DatasetError, ImageReadError, ValueError) as e:
        raise CLIError(str(e)) from None
    if len(results) > 1:
        print(f"mean over folds: mIoU {sum(r['mIoU'] for r in results) / len(results):.2f}  "
              f"FB-IoU {sum(r['FB-IoU'] for r in results) / len(results):.2f}")
    if args.out:
        atomic_write_text(args.out, json.dumps({"model": str(args.model), "folds": results}, indent=2))
        print(f"wrote {args.out}")
    return 0


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena; a server's request threads then grow RSS
    with fragmentation. Two arenas keep it flat (the effect of MALLOC_ARENA_MAX=2; no-op off glibc)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _serve_logging(level: str) -> None:
    """The server's own log on stderr: one access line per request (info), failures with their traceback and
    request id (error)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("attnseg.serve")
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .serve.app import Settings, create_app, load_models
    except ImportError as e:
        raise CLIError(f"attnseg serve needs the serve extra: pip install 'attnseg[serve]' ({e.name} missing)") from None
    _limit_malloc_arenas()
    sources = args.model or [m for m in DEFAULT_MODELS if m in __import__("attnseg").list_pretrained()]
    if not sources:
        raise CLIError("no model to serve: pass --model SOURCE (repeatable)")
    try:
        models = load_models(sources, args.backend, args.threads)
    except (ValueError, OSError, ImportError) as e:
        raise CLIError(str(e)) from None
    settings = Settings(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_batch=args.max_batch,
                        max_wait_ms=args.max_wait_ms, queue=args.queue, timeout_s=args.timeout, cors=args.cors)
    app = create_app(models, settings)
    _serve_logging(args.log_level)
    print(f"serving {', '.join(models)} on http://{args.host}:{args.port}/ (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0


def _model_from_name_or_source(args, fixed_labels: bool = False):
    """Registered architecture name -> random weights (for speed/FLOPs); anything else -> load_model.
    With `fixed_labels`, an LSeg model is wrapped to take images only, with --num-classes random label
    embeddings (speed and FLOPs do not depend on the label text, and no text encoder is loaded)."""
    import attnseg
    from .models import MODELS, has_classifier

    if args.model in MODELS:
        model = attnseg.create_model(args.model, **({"num_classes": args.num_classes}
                                                    if has_classifier(args.model) else {}))
    else:
        backend, args.backend = getattr(args, "backend", "eager"), "eager"
        model = _load(args)
        args.backend = backend
    if fixed_labels:
        from .models.lseg import FixedLabels, LSeg

        if isinstance(model, LSeg):  # an LSeg ONNX graph already takes its label embeddings as an input
            model = FixedLabels(model, args.num_classes)
    return model


def cmd_export(args) -> int:
    from .export import ExportError, export_onnx
    from .io import WriteFailed

    _check_file_out(args.out)
    model = _model_from_name_or_source(args)
    _apply_isr(model, args)
    if args.quantize == "int8":
        return _export_int8(model, args)
    try:
        path = export_onnx(model, args.out, dynamic=args.dynamic, example_size=args.size, opset=args.opset)
    except (ImportError, ExportError) as e:
        raise CLIError(str(e)) from None
    except OSError as e:  # WriteFailed names the file; a temp file of the exporter's its own
        raise CLIError(str(e) if isinstance(e, WriteFailed) else f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {path} ({'dynamic batch/height/width' if args.dynamic else f'fixed {args.size[0]}x{args.size[1]}'}"
          + (f", ISR {args.isr} baked in" if args.isr else "") + ")")
    return 0


def _export_int8(model, args) -> int:
    from .data import DatasetError, EvalTransform, build_dataset
    from .export import ExportError
    from .io import WriteFailed
    from .quantize import calibration_inputs, default_fp32_ops, quantize_int8

    if not args.calibrate:
        raise CLIError("--quantize int8 needs --calibrate DATASET:ROOT:SPLIT (real images for the activation ranges)")
    parts = args.calibrate.split(":")
    if len(parts) != 3:
        raise CLIError(f"--calibrate expects DATASET:ROOT:SPLIT, e.g. camvid:../shared/data/camvid:train; got "
                       f"{args.calibrate!r}")
    try:
        ds = build_dataset(parts[0], parts[1], parts[2], EvalTransform())
        calib = calibration_inputs(model, ds, args.calib_images)
        excl = (default_fp32_ops(model) if args.exclude_ops is None
                else [o.strip() for o in args.exclude_ops.split(",") if o.strip() and o.strip() != "none"])
        path = quantize_int8(model, args.out, calib, args.calib_method, excl)
    except (DatasetError, ValueError, ImportError, ExportError) as e:
        raise CLIError(str(e)) from None
    except OSError as e:
        raise CLIError(str(e) if isinstance(e, WriteFailed) else f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {path} (int8 QDQ, per-channel weights, {args.calib_method} calibration on {len(calib)} images"
          + (f", fp32 op types: {','.join(excl)}" if excl else "")
          + "; products of two activations and size arithmetic in fp32)")
    return 0


def cmd_flops(args) -> int:
    from .tools.flops import count_flops

    model = _model_from_name_or_source(args, fixed_labels=True)
    _apply_isr(model, args)
    r = count_flops(model, args.size, paper=not args.as_run)
    print(f"{args.model} at {args.size[0]}x{args.size[1]}" + (f", ISR {args.isr}" if args.isr else "") + ":")
    print(f"  GFLOPs (multiply-accumulates, as the papers count): {r['gmacs']:.2f}")
    print(f"  parameters: {r['params_m']:.2f}M")
    for k, v in sorted(r["by_op"].items(), key=lambda kv: -kv[1]):
        print(f"    {k:<48} {v:8.2f}")
    return 0


def cmd_benchmark(args) -> int:
    import json

    import torch

    from .tools.benchmark import benchmark_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = _model_from_name_or_source(args, fixed_labels=True)
    _apply_isr(model, args)
    backend = args.backend
    if backend == "onnx" or str(args.model).endswith(".onnx"):
        model, backend, args.backend = _maybe_onnx(model, args), "eager", "onnx"
    try:
        r = benchmark_model(model, args.size, args.batch, args.dtype, backend, args.device, args.warmup, args.iters)
    except ValueError as e:
        raise CLIError(str(e)) from None
    r.update(model=args.model, size=f"{args.size[0]}x{args.size[1]}", batch=args.batch, dtype=args.dtype,
             backend=args.backend, device=args.device, threads=torch.get_num_threads(), isr=args.isr)
    print(f"{'model':<16} {'size':>10} {'batch':>5} {'dtype':>5} {'backend':>8} {'median ms':>10} {'p90 ms':>8} "
          f"{'img/s':>7} {'peak MB':>8}")
    print(f"{args.model[:16]:<16} {r['size']:>10} {args.batch:>5} {args.dtype:>5} {args.backend:>8} "
          f"{r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} {r['images_per_s']:>7.2f} {r['peak_mem_mb']:>8.0f}")
    if args.json:
        print(json.dumps(r))
    return 0


def cmd_isr_sweep(args) -> int:
    import torch

    from .tools.isr_sweep import DEFAULT_GRID, markdown, sweep, write_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load(args)
    if not hasattr(model, "set_isr"):
        raise CLIError(f"{args.model} has no spatial-reduction attention to reduce")
    ds = _eval_dataset(args)
    grid = args.settings.split(";") if args.settings else DEFAULT_GRID
    img = ds[0]["image"]
    size = tuple(args.size) if args.size else tuple(img.shape[-2:])
    meta = model.meta
    rows = sweep(model, ds, grid, size, meta["mean"], meta["std"], latency_iters=args.latency_iters)
    write_outputs(rows, Path(args.out), size, f"{model.variant}: ISR on {args.dataset} {args.split}")
    print(markdown(rows, size))
    print(f"wrote {args.out}/isr_sweep.json, isr_sweep.md, isr_sweep.png")
    return 0


def _apply_isr(model, args) -> None:
    if not getattr(args, "isr", None):
        return
    if not hasattr(model, "set_isr"):
        raise CLIError(f"--isr: {args.model} has no spatial-reduction attention (or is an exported graph: "
                       "export with --isr instead)")
    try:
        model.set_isr(**parse_isr(args.isr))
    except ValueError as e:
        raise CLIError(f"--isr {args.isr}: {e}") from None


def parse_isr(s: str) -> dict:
    """"2,2,1,1:2,2,2" -> {"encoder": [2,2,1,1], "decoder": [2,2,2]}."""
    enc, _, dec = s.partition(":")
    try:
        out = {"encoder": [int(v) for v in enc.split(",")] if enc else None}
        if dec:
            out["decoder"] = [int(v) for v in dec.split(",")]
    except ValueError:
        raise CLIError(f"--isr expects ENC[:DEC] comma-separated integers, e.g. 2,2,1,1:2,2,2; got {s!r}") from None
    return out


def _scales(s: str) -> list[float]:
    """--scales: comma-separated finite numbers in (0, 8]."""
    return [float_range(0.0, 8.0, lo_open=True)(v) for v in s.split(",")]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(prog="attnseg", description="Attention-based semantic segmentation.")
    ap.add_argument("--version", action="version", version=f"attnseg {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("models", help="list model variants with parameter counts")
    p.add_argument("--filter", default=None, help="only names containing this")
    p.add_argument("--num-classes", type=int_range(1, 65535), default=150,
                   help="classes for the parameter count (default 150)")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("predict", help="segment images; writes NAME.png label maps and NAME_overlay.jpg")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    _add_model_args(p, required=False)
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--size", type=_size, default="auto",
                   help="short side to run at: auto (default: the size the model was trained at, as its checkpoint "
                        "records; 512 if it records none), native (the image's own resolution) or N pixels; the "
                        "label map always comes back at the image's size. Small images are upscaled to it (an 8x8 "
                        "icon runs as a 540x540 image: it costs as much as a photo; images of one size run --batch "
                        "at a time); the result is then fitted to --max-work-pixels")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=_pair, default=(512, 512), help="slide window, N or HxW")
    p.add_argument("--stride", type=_pair, default=None, help="slide stride, N or HxW (default: 2/3 of the crop)")
    p.add_argument("--alpha", type=float_range(0.0, 1.0), default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--max-pixels", type=int_range(1), default=None,
                   help="refuse images with more pixels than this, read from the header before decoding "
                        "(default 250e6)")
    _add_work_limit(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--isr", default=None, help="inference spatial reduction ENC[:DEC], e.g. 2,2,1,1:2,2,2")
    p.add_argument("--backend", choices=["eager", "onnx"], default="eager",
                   help="onnx: run in onnxruntime (a .onnx --model, or export the checkpoint first)")
    p.add_argument("--labels", default=None, help='LSeg: comma-separated labels, e.g. "sky, road, car, other"')
    p.add_argument("--labels-file", default=None, help="LSeg: labels, one per line")
    p.add_argument("--threads", type=int_range(1, 1024), default=None)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (eager models)")
    p.add_argument("--save-masks", action="store_true",
                   help="videos: also write one label PNG per frame (NAME_masks/000000.png, ...)")
    p.add_argument("--batch", type=int_range(1, 256), default=4,
                   help="images of one size and video frames per forward pass (default 4); videos become NAME_overlay.mp4 (H.264, no "
                        "audio) and need PyAV: pip install 'attnseg[video]'")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("train", help="train a model from a YAML config (torchrun for multi-process)")
    p.add_argument("--config", default=None, help="YAML file of overrides (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iters=1000 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    p.add_argument("--work-dir", default=None, help="output folder (overrides train.work_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in the work dir")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset split (aAcc, mAcc, mIoU, per-class table)")
    _add_model_args(p)
    p.add_argument("--dataset", required=True, help="camvid, ade20k, cityscapes, voc, pascal_context[59], "
                                                   "coco_stuff164k, folder")
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=_pair, default=(512, 512))
    p.add_argument("--stride", type=_pair, default=None, help="slide stride (default: 2/3 of the crop)")
    p.add_argument("--scales", type=_scales, default=[1.0], help="multi-scale test, e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scale", type=_pair, default=None, help="keep-ratio resize before inference, e.g. 2048x512")
    _add_work_limit(p)
    p.add_argument("--isr", default=None, help="inference spatial reduction ENC[:DEC]")
    p.add_argument("--fb-background", type=int_range(0, 65535), default=None, help="report FB-IoU with this background class")
    p.add_argument("--labels", default=None, help="LSeg: labels in class order (e.g. synonyms), comma-separated")
    p.add_argument("--labels-file", default=None, help="LSeg: labels in class order, one per line")
    p.add_argument("--limit", type=int_range(1), default=None, help="only the first N images")
    p.add_argument("--out", default=None, help="write metrics as JSON here")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write confusion.png (normalised confusion matrix) and per_class_iou.png here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", choices=["eager", "onnx"], default="eager")
    p.add_argument("--threads", type=int_range(1, 1024), default=None)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (eager models)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("score", help="score label maps written by `predict` against a dataset split's ground truth")
    p.add_argument("predictions", help="folder of label maps (NAME.png per image, as `attnseg predict` writes)")
    p.add_argument("--dataset", required=True, help="camvid, ade20k, cityscapes, voc, pascal_context[59], "
                                                   "coco_stuff164k, folder")
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int_range(1), default=None, help="only the first N images of the split")
    p.add_argument("--out", default=None, help="write metrics as JSON here")
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("fewshot", help="zero-shot LSeg on few-shot benchmarks (PASCAL-5i, COCO-20i, FSS-1000)")
    _add_model_args(p)
    p.add_argument("--benchmark", choices=["pascal5i", "coco20i", "fss1000"], required=True)
    p.add_argument("--data-root", required=True, help="folder holding VOC2012/, COCO2014/ or FSS-1000/")
    p.add_argument("--splits", required=True, help="HSNet's data/splits folder (pascal/, coco/, fss/)")
    p.add_argument("--folds", type=lambda s: [int(v) for v in s.split(",")], default=[0],
                   help="comma-separated folds (PASCAL/COCO 0..3; FSS-1000 has one split: 0)")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: val for PASCAL-5i and COCO-20i, test for FSS-1000, as LSeg "
                        "and HSNet evaluate)")
    p.add_argument("--protocol", choices=["lseg", "hsnet"], default="lseg",
                   help="episode schedule, mask reading and scoring size of LSeg's evaluation (default, 480) or "
                        "HSNet's (400); see the README")
    p.add_argument("--label-words", choices=["lseg", "readable"], default=None,
                   help="class words given to the text encoder: lseg (LSeg's label files: 'trafficlight', "
                        "'tvmonitor', FSS names with underscores; background 'others') or readable ('traffic "
                        "light', spaces; background 'other'); default: lseg under --protocol lseg, else readable")
    p.add_argument("--episodes", type=int_range(1), default=None,
                   help="episodes per fold (default: the protocol's: 1000 for PASCAL-5i, wrapping around the "
                        "fold's list, and COCO-20i; every query for FSS-1000: 2,160 on test under lseg)")
    p.add_argument("--original-size", action="store_true",
                   help="score at the original mask size (HSNet's --use_original_imgsize)")
    p.add_argument("--shots", type=int_range(1, 100), default=1, help="support images drawn per episode (unused zero-shot)")
    p.add_argument("--seed", type=int_range(0), default=0)
    p.add_argument("--size", type=int_range(16, 8192), default=None,
                   help="square input (and scoring) size; default the protocol's (480 lseg, 400 hsnet)")
    p.add_argument("--background", default=None,
                   help="the background label (default: 'others' with LSeg's words, 'other' with readable ones)")
    p.add_argument("--out", default=None, help="write results as JSON here")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_fewshot)

    p = sub.add_parser("export", help="export to ONNX (dynamic batch/height/width; ISR settings baked in)")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--num-classes", type=int_range(1, 4096), default=150,
                   help="classes (LSeg: number of labels); default 150")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--size", type=_pair, default=(256, 320), help="example (or fixed) input size")
    p.add_argument("--opset", type=int, default=20, choices=range(18, 24), metavar="{18..23}",
                   help="ONNX opset (default 20: onnxruntime >= 1.17; 18 for older runtimes, GELU then unfused)")
    p.add_argument("--isr", default=None)
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8: onnxruntime static QDQ quantization")
    p.add_argument("--calibrate", default=None, metavar="DATASET:ROOT:SPLIT", help="calibration images (int8)")
    p.add_argument("--calib-images", type=int_range(1, 10000), default=64)
    p.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.add_argument("--exclude-ops", default=None,
                   help="comma-separated ONNX op types kept in fp32 (default: the model family's measured choice, "
                        "'none' for none); products of two activations and arithmetic on sizes always stay fp32")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("flops", help="GFLOPs (MACs) and parameters at an input size")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--size", type=_pair, default=(512, 512))
    p.add_argument("--num-classes", type=int_range(1, 4096), default=150,
                   help="classes (LSeg: number of labels); default 150")
    p.add_argument("--isr", default=None, help="ENC[:DEC], e.g. 2,2,1,1:2,2,2")
    p.add_argument("--as-run", action="store_true",
                   help="count the operations actually executed (SegFormer's fused decoder) instead of the paper's")
    p.set_defaults(fn=cmd_flops)

    p = sub.add_parser("benchmark", help="latency, throughput and peak memory")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--num-classes", type=int_range(1, 4096), default=150,
                   help="classes (LSeg: number of labels); default 150")
    p.add_argument("--size", type=_pair, default=(512, 512))
    p.add_argument("--batch", type=int_range(1, 1024), default=1)
    p.add_argument("--threads", type=int_range(1, 1024), default=None)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--backend", choices=["eager", "compile", "onnx"], default="eager")
    p.add_argument("--device", default="cpu")
    p.add_argument("--isr", default=None)
    p.add_argument("--warmup", type=int_range(0, 100000), default=3)
    p.add_argument("--iters", type=int_range(1, 100000), default=10)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.set_defaults(fn=cmd_benchmark)

    p = sub.add_parser("explain", help="attention maps of one pixel in every attention layer (PNGs)")
    p.add_argument("image", help="an image file")
    _add_model_args(p)
    p.add_argument("--pixel", required=True, help="Y,X: row and column in the image")
    p.add_argument("--labels", default=None, help="LSeg: comma-separated labels (per-label similarity maps)")
    p.add_argument("--labels-file", default=None)
    p.add_argument("--size", type=_size, default="auto", help="short side to run at (as predict)")
    p.add_argument("--max-work-pixels", type=int_range(1024), default=EXPLAIN_MAX_WORK_PIXELS,
                   help=f"most pixels the model input may have (default {EXPLAIN_MAX_WORK_PIXELS:,}: every attention "
                        "layer's weights are kept, quadratic in the pixels); larger inputs are shrunk to fit")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(fn=cmd_explain)

    p = sub.add_parser("robustness", help="mIoU under the 16 Cityscapes-C corruptions (table, JSON, CSV, plot)")
    p.add_argument("--model", action="append", required=True, help="model to test (repeatable: one line each)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--corruptions", default="all", help="all, or comma-separated names")
    p.add_argument("--severities", default=None,
                   help="comma-separated 1..5 (default: the protocol's: 1-5, and 1-3 for the four noises)")
    p.add_argument("--limit", type=int_range(1), default=None, help="only the first N images")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=_pair, default=(512, 512))
    p.add_argument("--stride", type=_pair, default=None)
    _add_work_limit(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="robustness", help="output folder")
    p.set_defaults(fn=cmd_robustness)

    p = sub.add_parser("erf", help="effective receptive field of each encoder stage and the decoder (a PNG)")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--num-classes", type=int_range(1, 4096), default=150)
    p.add_argument("--images", default=None, help="a folder of images")
    p.add_argument("--dataset", default=None, help="or a dataset (with --data-root, --split)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="val")
    p.add_argument("--num-images", type=int_range(1), default=100)
    p.add_argument("--size", type=int_range(32, 4096), default=512, help="images are resized to SIZE x SIZE")
    p.add_argument("--threads", type=int_range(1, 1024), default=None)
    p.add_argument("--out", required=True, help="output PNG (a JSON with the square sides is written beside it)")
    p.set_defaults(fn=cmd_erf)

    p = sub.add_parser("serve", help="web page and HTTP API over loaded models (pip install 'attnseg[serve]')")
    p.add_argument("--model", action="append", default=None,
                   help="model to load (repeatable; default: every shipped model); requests pick them by name")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_range(1, 65535), default=8000)
    p.add_argument("--backend", choices=["eager", "onnx"], default="eager")
    p.add_argument("--threads", type=int_range(1, 1024), default=None)
    p.add_argument("--max-batch", type=int_range(1, 256), default=8, help="requests per model batch")
    p.add_argument("--max-wait-ms", type=float_range(0.0, 10000.0), default=0.0,
                   help="how long the worker waits for requests to batch with the first; default 0 (no "
                        "micro-batching: on a 2-core CPU batching measured slower, see the README); e.g. 10 on GPUs")
    p.add_argument("--queue", type=int_range(1, 100000), default=32, help="queued requests before 503")
    p.add_argument("--max-upload-mb", type=float_range(0.001, 10000.0), default=20.0)
    p.add_argument("--max-pixels", type=int_range(1), default=40_000_000, help="per image, read from the header")
    _add_work_limit(p)
    p.add_argument("--timeout", type=float_range(0.1, 3600.0), default=60.0, help="seconds per request")
    p.add_argument("--cors", default=None, metavar="ORIGIN", help="allow this origin (no CORS headers otherwise)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="server log on stderr: info writes one access line per request; errors always carry the "
                        "request id and traceback (default info)")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("isr-sweep", help="mIoU / GFLOPs / latency over a grid of ISR settings, with a plot")
    _add_model_args(p)
    p.add_argument("--dataset", default="camvid")
    p.add_argument("--data-root", default="../shared/data/camvid")
    p.add_argument("--split", default="test")
    p.add_argument("--settings", default=None, help="';'-separated ENC:DEC settings (first = baseline)")
    p.add_argument("--size", type=_pair, default=None, help="size for GFLOPs/latency (default: the images')")
    p.add_argument("--limit", type=int_range(1), default=None)
    p.add_argument("--latency-iters", type=int_range(1, 10000), default=5)
    p.add_argument("--threads", type=int_range(1, 1024), default=None)
    p.add_argument("--out", default="isr_sweep")
    p.set_defaults(fn=cmd_isr_sweep)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "fn", None):
        ap.print_help()
        return 2
    try:
        return args.fn(args)
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, ImportError) as e:  # a library error no verb caught: still one line
        from .io import WriteFailed
        from .models.text import TextEncoderError
        from .worksize import WorkSizeError

        if not isinstance(e, (WriteFailed, WorkSizeError, TextEncoderError, ImportError)):
            raise
        print(f"error: {_first_line(e)}", file=sys.stderr)
        return 1 if isinstance(e, WriteFailed) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`attnseg <verb>`: the command-line interface."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def is_language_driven(model) -> bool:
    from .models.lseg import is_language_driven as f

    return f(model)


class CLIError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


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

            return OnnxModel(args.model, getattr(args, "threads", None))
        over = {"text_encoder": args.text_encoder} if getattr(args, "text_encoder", None) else {}
        over.update(_model_options(getattr(args, "model_option", [])))
        model = attnseg.load_model(args.model, model=args.arch, device=getattr(args, "device", "cpu"), **over)
    except (ValueError, OSError, ImportError) as e:
        raise CLIError(str(e)) from None
    return _maybe_onnx(model, args)


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
    path = Path(tempfile.mkdtemp(prefix="attnseg_onnx_")) / "model.onnx"
    try:
        export_onnx(model, path)
        return OnnxModel(path, getattr(args, "threads", None))
    except ImportError as e:
        raise CLIError(str(e)) from None


def cmd_models(args) -> int:
    from .hub import list_pretrained
    from .models import MODELS, create_model, has_classifier

    print(f"{'name':<20} {'params (M)':>10}  description")
    for name in sorted(MODELS):
        if args.filter and args.filter not in name:
            continue
        kw = {"num_classes": args.num_classes} if has_classifier(name) else {}
        m = create_model(name, **kw)
        n = sum(p.numel() for p in m.parameters()) / 1e6
        print(f"{name:<20} {n:>10.2f}  {MODELS[name]['description']}")
    shipped = list_pretrained()
    print(f"\nshipped trained weights: {', '.join(shipped) if shipped else 'none yet'}")
    return 0


def _collect_inputs(inputs: list[str]) -> list[Path]:
    from .io import IMAGE_EXTENSIONS

    files = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        elif p.exists():
            files.append(p)
        else:
            raise CLIError(f"input not found: {s}")
    if not files:
        raise CLIError(f"no images found in {', '.join(inputs)} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def default_model_source() -> str | None:
    from .hub import list_pretrained

    shipped = list_pretrained()
    for name in ("sanet-effnet-lite0-camvid", "lseg-effnet-lite0-camvid"):
        if name in shipped:
            return name
    return shipped[0] if shipped else None


def cmd_predict(args) -> int:
    import numpy as np
    from tqdm import tqdm

    import attnseg
    from .engine.inference import InferenceConfig
    from .io import ImageReadError, atomic_save, label_png, overlay, read_image

    files = _collect_inputs(args.inputs)
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
    inference = InferenceConfig(mode=args.mode, crop=args.crop, stride=args.stride)
    seg = attnseg.Segmenter(model, size=args.size, inference=inference, device=args.device)
    kw = {}
    labels = _read_labels(args)
    if labels is not None:
        if not is_language_driven(model):
            raise CLIError(f"--labels needs a language-driven model (lseg-*); {args.model} has fixed classes")
        kw["labels"] = labels
        seg.class_names = labels
    elif is_language_driven(model) and not getattr(model, "default_labels", None):
        raise CLIError("this LSeg model needs --labels \"sky, road, car, other\" (or --labels-file FILE)")
    out = Path(args.out)
    failed = []
    bar = tqdm(files, unit="img", disable=len(files) < 2 or not sys.stderr.isatty())
    for f in bar:
        try:
            rgb = read_image(f)
        except ImageReadError as e:
            failed.append(f)
            tqdm.write(f"error: {e}; skipped", file=sys.stderr)
            continue
        label = seg.predict(rgb, **kw)
        atomic_save(label_png(label, seg.palette), out / f"{f.stem}.png")
        atomic_save(overlay(rgb, label, seg.palette, args.alpha), out / f"{f.stem}_overlay.jpg", quality=90)
        if not bar.disable:
            continue
        counts = np.bincount(label.ravel(), minlength=1)
        top = counts.argsort()[::-1][:3]
        names = seg.class_names or []
        desc = ", ".join(f"{names[i] if i < len(names) else i} {100 * counts[i] / label.size:.0f}%" for i in top
                         if counts[i])
        print(f"{f} -> {out / (f.stem + '.png')} ({desc})")
    ok = len(files) - len(failed)
    print(f"wrote {ok} label map(s) and overlay(s) to {out}" + (f"; {len(failed)} failed: "
                                                                 + ", ".join(map(str, failed)) if failed else ""))
    return 1 if failed else 0


def _read_labels(args) -> list[str] | None:
    """--labels "a, b, c" or --labels-file (one per line); duplicates and empty labels are errors."""
    from .models.text import TextEncoderError, check_labels

    raw = None
    if getattr(args, "labels", None):
        raw = [s for s in args.labels.split(",")]
    if getattr(args, "labels_file", None):
        try:
            raw = Path(args.labels_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise CLIError(f"cannot read --labels-file {args.labels_file}: {e}") from None
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
        result = train(cfg, resume=args.resume)
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
    from .engine.inference import InferenceConfig
    from .engine.metrics import format_table
    from .io import ImageReadError, atomic_write_text

    model = _load(args)
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
        inference = InferenceConfig(args.mode, args.crop, args.stride, scales=args.scales, flip=args.flip)
        meta = getattr(model, "meta", {}) or {}
        _apply_isr(model, args)
        m = evaluate(model, ds, inference, meta.get("mean"), meta.get("std"), args.device, ds.num_classes,
                     rank, world, background=args.fb_background, model_kwargs=model_kwargs)
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
                                                    "scales": args.scales, "flip": args.flip,
                                                    "class_names": ds.class_names, **m},
                                                   indent=2))
            print(f"wrote {args.out}")
    return 0


def cmd_fewshot(args) -> int:
    import json

    from .data import DatasetError
    from .data.fewshot import build_benchmark
    from .engine.fewshot import ZeroShotLSeg, evaluate_episodes
    from .io import ImageReadError, atomic_write_text

    model = _load(args)
    if not is_language_driven(model):
        raise CLIError(f"fewshot evaluates language-driven models (lseg-*) zero-shot; {args.model} has fixed classes")
    results = []
    try:
        for fold in args.folds:
            bench = build_benchmark(args.benchmark, args.data_root, args.splits, fold, args.split, shots=args.shots,
                                    episodes=args.episodes, seed=args.seed)
            r = evaluate_episodes(ZeroShotLSeg(model, args.size, args.background, args.device), bench,
                                  progress=sys.stderr.isatty())
            print(f"{args.benchmark} fold {fold} ({r['episodes']} episodes): mIoU {r['mIoU']:.2f}  "
                  f"FB-IoU {r['FB-IoU']:.2f}")
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
    from .export import export_onnx

    model = _model_from_name_or_source(args)
    _apply_isr(model, args)
    try:
        path = export_onnx(model, args.out, dynamic=args.dynamic, example_size=args.size, opset=args.opset)
    except ImportError as e:
        raise CLIError(str(e)) from None
    print(f"wrote {path} ({'dynamic batch/height/width' if args.dynamic else f'fixed {args.size[0]}x{args.size[1]}'}"
          + (f", ISR {args.isr} baked in" if args.isr else "") + ")")
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

    from .data import DatasetError, EvalTransform, build_dataset
    from .tools.isr_sweep import DEFAULT_GRID, markdown, sweep, write_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    model = _load(args)
    if not hasattr(model, "set_isr"):
        raise CLIError(f"{args.model} has no spatial-reduction attention to reduce")
    try:
        ds = build_dataset(args.dataset, args.data_root, args.split, EvalTransform())
    except DatasetError as e:
        raise CLIError(str(e)) from None
    if args.limit:
        ds.samples = ds.samples[: args.limit]
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


def _floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="attnseg", description="Attention-based semantic segmentation.")
    ap.add_argument("--version", action="version", version=f"attnseg {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("models", help="list model variants with parameter counts")
    p.add_argument("--filter", default=None, help="only names containing this")
    p.add_argument("--num-classes", type=int, default=150, help="classes for the parameter count (default 150)")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("predict", help="segment images; writes NAME.png label maps and NAME_overlay.jpg")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    _add_model_args(p, required=False)
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--size", type=int, default=None, help="resize the short side to this before inference")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=_pair, default=(512, 512), help="slide window, N or HxW")
    p.add_argument("--stride", type=_pair, default=(341, 341), help="slide stride, N or HxW")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--device", default="cpu")
    p.add_argument("--isr", default=None, help="inference spatial reduction ENC[:DEC], e.g. 2,2,1,1:2,2,2")
    p.add_argument("--backend", choices=["eager", "onnx"], default="eager",
                   help="onnx: run in onnxruntime (a .onnx --model, or export the checkpoint first)")
    p.add_argument("--labels", default=None, help='LSeg: comma-separated labels, e.g. "sky, road, car, other"')
    p.add_argument("--labels-file", default=None, help="LSeg: labels, one per line")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("train", help="train a model from a YAML config (torchrun for multi-process)")
    p.add_argument("--config", default=None, help="YAML file of overrides (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iters=1000 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    p.add_argument("--work-dir", default=None, help="output folder (overrides train.work_dir)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset split (aAcc, mAcc, mIoU, per-class table)")
    _add_model_args(p)
    p.add_argument("--dataset", required=True, help="camvid, ade20k, cityscapes, voc, pascal_context[59], "
                                                   "coco_stuff164k, folder")
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=_pair, default=(512, 512))
    p.add_argument("--stride", type=_pair, default=(341, 341))
    p.add_argument("--scales", type=_floats, default=[1.0], help="multi-scale test, e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scale", type=_pair, default=None, help="keep-ratio resize before inference, e.g. 2048x512")
    p.add_argument("--isr", default=None, help="inference spatial reduction ENC[:DEC]")
    p.add_argument("--fb-background", type=int, default=None, help="report FB-IoU with this background class")
    p.add_argument("--labels", default=None, help="LSeg: labels in class order (e.g. synonyms), comma-separated")
    p.add_argument("--labels-file", default=None, help="LSeg: labels in class order, one per line")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--out", default=None, help="write metrics as JSON here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", choices=["eager", "onnx"], default="eager")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("fewshot", help="zero-shot LSeg on few-shot benchmarks (PASCAL-5i, COCO-20i, FSS-1000)")
    _add_model_args(p)
    p.add_argument("--benchmark", choices=["pascal5i", "coco20i", "fss1000"], required=True)
    p.add_argument("--data-root", required=True, help="folder holding VOC2012/, COCO2014/ or FSS-1000/")
    p.add_argument("--splits", required=True, help="HSNet's data/splits folder (pascal/, coco/, fss/)")
    p.add_argument("--folds", type=lambda s: [int(v) for v in s.split(",")], default=[0],
                   help="comma-separated folds (PASCAL/COCO 0..3; FSS-1000 has one split: 0)")
    p.add_argument("--split", default="val", help="val (PASCAL/COCO), test (FSS-1000)")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--shots", type=int, default=1, help="support images drawn per episode (unused zero-shot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=480, help="square input size (a multiple of the ViT patch)")
    p.add_argument("--background", default="other", help="the background label")
    p.add_argument("--out", default=None, help="write results as JSON here")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_fewshot)

    p = sub.add_parser("export", help="export to ONNX (dynamic batch/height/width; ISR settings baked in)")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--num-classes", type=int, default=150, help="classes (LSeg: number of labels); default 150")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--size", type=_pair, default=(256, 320), help="example (or fixed) input size")
    p.add_argument("--opset", type=int, default=20, choices=range(18, 24), metavar="{18..23}",
                   help="ONNX opset (default 20: onnxruntime >= 1.17; 18 for older runtimes, GELU then unfused)")
    p.add_argument("--isr", default=None)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("flops", help="GFLOPs (MACs) and parameters at an input size")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--size", type=_pair, default=(512, 512))
    p.add_argument("--num-classes", type=int, default=150, help="classes (LSeg: number of labels); default 150")
    p.add_argument("--isr", default=None, help="ENC[:DEC], e.g. 2,2,1,1:2,2,2")
    p.add_argument("--as-run", action="store_true",
                   help="count the operations actually executed (SegFormer's fused decoder) instead of the paper's")
    p.set_defaults(fn=cmd_flops)

    p = sub.add_parser("benchmark", help="latency, throughput and peak memory")
    p.add_argument("--model", required=True, help="registered name (random weights) or checkpoint")
    p.add_argument("--arch", default=None)
    p.add_argument("--num-classes", type=int, default=150, help="classes (LSeg: number of labels); default 150")
    p.add_argument("--size", type=_pair, default=(512, 512))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--backend", choices=["eager", "compile", "onnx"], default="eager")
    p.add_argument("--device", default="cpu")
    p.add_argument("--isr", default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.set_defaults(fn=cmd_benchmark)

    p = sub.add_parser("isr-sweep", help="mIoU / GFLOPs / latency over a grid of ISR settings, with a plot")
    _add_model_args(p)
    p.add_argument("--dataset", default="camvid")
    p.add_argument("--data-root", default="../shared/data/camvid")
    p.add_argument("--split", default="test")
    p.add_argument("--settings", default=None, help="';'-separated ENC:DEC settings (first = baseline)")
    p.add_argument("--size", type=_pair, default=None, help="size for GFLOPs/latency (default: the images')")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--latency-iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

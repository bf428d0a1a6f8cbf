"""The analysis verbs: `flops`, `benchmark`, `erf`, `explain`, `robustness`, `isr-sweep`, and LSeg's
`label-study` and `text-table`."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import attnseg

from ..inference.modes import InferenceConfig
from ..io import IMAGE_EXTENSIONS, ImageReadError, atomic_write_text, read_image
from ..meta import meta_from
from ..analysis import label_study, text_table
from ..analysis.benchmark import benchmark_model, eager_dtype
from ..deploy.backends.cpu import record as machine_record
from ..deploy.graphs import is_graph_file
from ..analysis.corruptions import CORRUPTIONS
from ..analysis.erf import compute_erf, plot_erf, square_sides
from ..analysis.explain import explain, save_maps
from ..analysis.flops import count_flops
from ..analysis.isr_sweep import DEFAULT_GRID, markdown, sweep, write_outputs
from ..analysis.robustness import jobs, run, write
from ..worksize import WorkLimit, WorkSizeError, parse_short_side
from . import options
from .common import (CLIError, amp_dtype, apply_isr_arg, check_device, check_file_out, check_out_dir, eval_dataset, first_line,
                     inference_config, is_language_driven, load_model_arg, model_from_name_or_source,
                     read_labels, require_plots, start_ray)


def add_arguments(verb: str, p):
    return {"flops": _flops_arguments, "benchmark": _benchmark_arguments, "tune": _tune_arguments, "erf": _erf_arguments,
            "explain": _explain_arguments, "robustness": _robustness_arguments, "isr-sweep": _isr_sweep_arguments,
            "label-study": _label_study_arguments, "text-table": _text_table_arguments}[verb](p)


def _label_study_arguments(p):
    options.add_model(p)
    options.add_dataset(p, "test", dataset="camvid")
    options.add_limit(p)
    options.add_threads(p)
    options.add_size(p, parse_short_side, "auto", "short side the images run at: auto (the model's working size, "
                     "the one `attnseg predict` uses), native, or pixels")
    options.add_seed(p, "shuffle of the reordered set (default 0)")
    p.add_argument("--sets", default=None, help="YAML file: {set name: [one label per class, class order]}, extra "
                   "label sets (e.g. configs/vocab/camvid_dev_names.yaml)")
    options.add_out(p, help="write the results as JSON")
    return cmd_label_study


def cmd_label_study(args) -> int:
    from ..data import DatasetError, EvalTransform, build_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model_arg(args)
    try:
        ds = build_dataset(args.dataset, args.data_root, args.split, EvalTransform(None))
        short_side, res = label_study.run_study(model, ds, args.dataset, args.size, args.seed, args.sets, args.limit)
    except (DatasetError, label_study.StudyError, ValueError) as e:
        raise CLIError(str(e)) from None
    for name, r in res.items():
        share = f" ({100 * r['mIoU'] / res['names']['mIoU']:5.1f}% of names)" if "labels" in r else ""
        print(f"{name:<14} mIoU {r['mIoU']:6.2f}{share}" + (f"   labels: {', '.join(str(v) for v in r['labels'])}"
                                                              if "labels" in r else ""))
    if args.out:
        atomic_write_text(args.out, json.dumps({"short_side": short_side, **res}, indent=2))
    return 0


def _text_table_arguments(p):
    options.add_config(p, required=True, help="the LSeg training config (YAML)")
    options.add_labels(p, "more strings to include, comma-separated", "more strings to include, one per line")
    options.add_out(p, required=True, help="the table to write (.safetensors); an existing file is refused")
    options.add_overwrite(p, "replace an existing --out")
    return cmd_text_table


def cmd_text_table(args) -> int:
    from ..data import DatasetError
    from ..engine.config import ConfigError
    from ..engine.vocabulary import VocabularyError
    from ..models.text import TextEncoderError

    if Path(args.out).exists() and not args.overwrite:
        raise CLIError(f"{args.out} exists; choose another --out or pass --overwrite")
    extra = read_labels(args) or []
    try:
        path, n, spec = text_table.write_text_table(args.config, args.set, extra, args.out)
    except (ConfigError, DatasetError, VocabularyError, TextEncoderError, ValueError, OSError) as e:
        raise CLIError(str(e)) from None
    print(f"{path}: {n} strings from {spec!r}")
    return 0


def _name_or_source(p):
    options.add_model(p, help="registered name (random weights) or checkpoint", loading=False)
    options.add_num_classes(p)


def _flops_arguments(p):
    _name_or_source(p)
    options.add_size(p, options.pair, (512, 512), "input size HxW (default 512x512)")
    options.add_isr(p)
    p.add_argument("--as-run", action="store_true",
                   help="count the operations actually executed (SegFormer's fused decoder) instead of the paper's")
    return cmd_flops


def _benchmark_arguments(p):
    _name_or_source(p)
    options.add_size(p, options.pair, (512, 512), "input size HxW (default 512x512)")
    options.add_batch(p, 1024, 1, "images per forward pass (default 1)")
    options.add_threads(p)
    options.add_dtype(p, ("fp32", "bf16", "fp16", "int8", "int8-bf16"), None,
                      help="the precision (default fp32; with --backend auto: auto's choice)")
    options.add_backend(p, ("eager", "compile", "onnx", "openvino", "auto"), default="eager",
                        help="eager (default), compile (torch.compile), onnx, openvino, or auto: what `attnseg open` "
                             "chooses on this machine (measured once, at --size)")
    options.add_device(p)
    options.add_isr(p)
    p.add_argument("--warmup", type=options.int_range(0, 100000), default=3)
    p.add_argument("--iters", type=options.int_range(1, 100000), default=10)
    options.add_json(p)
    return cmd_benchmark


def _tune_arguments(p):
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="shipped names, checkpoints or graphs (default: the models `attnseg serve` loads)")
    options.add_threads(p)
    options.add_size(p, options.pair, None, "time at HxW (default: a 4:3 image at the model's working size)")
    options.add_dtype(p, help="only this precision (default: every precision eligible for the model)")
    p.add_argument("--calibration", nargs="+", default=None, metavar="IMAGES",
                   help="image files or folders: for a model without an accuracy record, int8 and bf16 become "
                        "eligible where they label these images as fp32 does on at least 99%% of the pixels "
                        "(measured once and kept for these weights; later runs of --backend auto use it)")
    options.add_json(p, "also print each model's result as one JSON line")
    return cmd_tune


def _explain_arguments(p):
    p.add_argument("image", help="an image file")
    options.add_model(p)
    p.add_argument("--pixel", required=True, help="Y,X: row and column in the image")
    options.add_labels(p, "LSeg: comma-separated labels (per-label similarity maps)", "LSeg: labels, one per line")
    options.add_size(p, options.short_side, "auto", "short side to run at (as predict)")
    options.add_work_limit(p, EXPLAIN_MAX_WORK_PIXELS,
                           f"most pixels the model input may have (default {EXPLAIN_MAX_WORK_PIXELS:,}: every "
                           "attention layer's weights are kept, quadratic in the pixels); larger inputs are shrunk")
    options.add_out(p, required=True, help="output folder")
    return cmd_explain


def _robustness_arguments(p):
    options.add_model(p, help="model to test (repeatable: one line each)", loading=False, arch=False, many=True)
    options.add_dataset(p, "test")
    p.add_argument("--corruptions", default="all", help="all, or comma-separated names")
    p.add_argument("--severities", default=None,
                   help="comma-separated 1..5 (default: the protocol's: 1-5, and 1-3 for the four noises)")
    options.add_limit(p)
    options.add_inference_mode(p)
    options.add_work_limit(p)
    options.add_device(p)
    options.add_threads(p)
    options.add_engine(p, "the models are evaluated")
    options.add_batch(p, 256, 4, "--engine ray: images per actor batch (default 4)")
    options.add_out(p, default="robustness", help="output folder")
    return cmd_robustness


def _erf_arguments(p):
    _name_or_source(p)
    p.add_argument("--images", default=None, help="a folder of images")
    options.add_dataset(p, required=False, help_split="split of --dataset (default val)")
    p.add_argument("--num-images", type=options.int_range(1), default=100)
    options.add_size(p, options.int_range(32, 4096), 512, "images are resized to SIZE x SIZE")
    options.add_threads(p)
    options.add_out(p, required=True, help="output PNG (a JSON with the square sides is written beside it)")
    return cmd_erf


def _isr_sweep_arguments(p):
    options.add_model(p)
    options.add_dataset(p, "test", dataset="camvid")
    p.add_argument("--settings", default=None, help="';'-separated ENC:DEC settings (first = baseline)")
    options.add_size(p, options.pair, None, "size for GFLOPs/latency (default: the images')")
    options.add_limit(p)
    p.add_argument("--latency-iters", type=options.int_range(1, 10000), default=5)
    options.add_threads(p)
    options.add_out(p, default="isr_sweep", help="output folder")
    return cmd_isr_sweep


def cmd_flops(args) -> int:
    model = model_from_name_or_source(args, fixed_labels=True)
    apply_isr_arg(model, args)
    try:
        r = count_flops(model, args.size, paper=not args.as_run)
    except RuntimeError as e:  # an input below the model's kernels
        raise CLIError(f"--size {args.size[0]}x{args.size[1]}: {args.model} cannot run on it ({first_line(e)}); use a "
                       "larger --size") from None
    print(f"{args.model} at {args.size[0]}x{args.size[1]}" + (f", ISR {args.isr}" if args.isr else "") + ":")
    print(f"  GFLOPs (multiply-accumulates, as the papers count): {r['gmacs']:.2f}")
    print(f"  parameters: {r['params_m']:.2f}M")
    for k, v in sorted(r["by_op"].items(), key=lambda kv: -kv[1]):
        print(f"    {k:<48} {v:8.2f}")
    return 0


def cmd_benchmark(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    graph = is_graph_file(args.model)
    run, dtype = args.backend, args.dtype or "fp32"
    if graph and run == "compile":
        raise CLIError(f"--backend compile compiles a PyTorch model; {args.model} is a graph: run it with --backend "
                       "onnx, openvino or auto")
    if run in ("eager", "compile") and not graph:
        try:
            eager_dtype(dtype)  # before anything loads
        except ValueError as e:
            raise CLIError(f"--backend {run} {e}") from None
    model = None if graph else model_from_name_or_source(args, fixed_labels=True)
    precision = dtype  # eager and compile: benchmark_model runs the fp32 weights at dtype (autocast)
    if run in ("eager", "compile") and not graph:
        apply_isr_arg(model, args)
    else:  # a graph runtime, or auto's choice: opened as predict opens it
        from ..deploy.runtime import open_model

        try:
            model = open_model(args.model if graph else model, backend="auto" if graph and run == "eager" else run,
                               precision=args.dtype, threads=args.threads, isr=None if graph else args.isr,
                               size=tuple(args.size), progress=sys.stderr.isatty())
        except (ValueError, OSError, ImportError, RuntimeError) as e:
            raise CLIError(first_line(e)) from None
        print(model.choice, file=sys.stderr)
        precision = getattr(model, "precision", None) or dtype
        run, dtype = "eager", "bf16" if amp_dtype(model) is not None else "fp32"  # graphs: called as they are
    try:
        r = benchmark_model(model, args.size, args.batch, dtype, run, args.device, args.warmup, args.iters)
    except ValueError as e:
        raise CLIError(str(e)) from None
    backend = getattr(model, "backend", args.backend) if args.backend != "compile" else "compile"
    r.update(model=args.model, size=f"{args.size[0]}x{args.size[1]}", batch=args.batch, dtype=precision,
             backend=backend, device=args.device, threads=torch.get_num_threads(), isr=args.isr,
             machine=machine_record(torch.get_num_threads()))
    print(f"{'model':<16} {'size':>10} {'batch':>5} {'dtype':>9} {'backend':>8} {'median ms':>10} {'p90 ms':>8} "
          f"{'img/s':>7} {'peak MB':>8}")
    print(f"{args.model[:16]:<16} {r['size']:>10} {args.batch:>5} {precision:>9} {backend:>8} "
          f"{r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} {r['images_per_s']:>7.2f} {r['peak_mem_mb']:>8.0f}")
    if args.json:
        print(json.dumps(r))
    return 0


def cmd_tune(args) -> int:
    """Measure every eligible backend x precision now, print the table, keep the winner for --backend auto."""
    from ..deploy.runtime import tune_model
    from ..pretrained import default_served

    for name in args.models or default_served():
        try:
            r = tune_model(name, args.threads, tuple(args.size) if args.size else None, args.dtype,
                           calibration=args.calibration)
        except (ValueError, OSError, ImportError, RuntimeError) as e:
            raise CLIError(first_line(e)) from None
        h, w = r["size"]
        print(f"{r['model']} at {w}x{h}, {r['threads'] or torch.get_num_threads()} thread(s), on {r['machine']}:")
        for cand, ips in r["images_per_s"].items():
            mark = "*" if cand == r["choice"] else " "
            print(f"  {mark} {cand:<22} " + (f"{ips:8.2f} img/s" if isinstance(ips, float) else f"failed: {ips}"))
        for cand, why in r["skipped"].items():
            print(f"    {cand:<22} not eligible: {why}")
        print(f"  --backend auto runs {r['choice']} here (kept; measured in {r['seconds']:.1f} s)")
        if args.json:
            print(json.dumps(r))
    return 0


def cmd_erf(args) -> int:
    require_plots()
    check_file_out(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.model).endswith(".onnx"):
        raise CLIError("erf needs gradients: pass a PyTorch checkpoint or a registered name, not an .onnx graph")
    model = model_from_name_or_source(args)  # LSeg: its stages and fused decoder features need no labels
    if args.images:
        paths = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    elif args.dataset:
        from ..data import DatasetError, build_dataset

        try:
            paths = [img for img, _ in build_dataset(args.dataset, args.data_root, args.split).samples]
        except DatasetError as e:
            raise CLIError(str(e)) from None
    else:
        raise CLIError("erf needs images: --images DIR or --dataset NAME --data-root PATH")
    paths = paths[: args.num_images]
    if not paths:
        raise CLIError("erf: no images found")
    meta = meta_from(getattr(model, "meta", None) or {}, fill_none=True)
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
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
    require_plots()
    check_out_dir(Path(args.out))
    if str(args.model).endswith(".onnx"):
        raise CLIError("explain reads the model's attention layers: pass a PyTorch checkpoint, not an .onnx graph")
    try:
        py, px = (int(v) for v in args.pixel.split(","))
    except ValueError:
        raise CLIError(f"--pixel expects Y,X (row, column in the image), got {args.pixel!r}") from None
    model = load_model_arg(args)
    labels = read_labels(args)
    if is_language_driven(model):
        labels = labels or getattr(model, "default_labels", None)
        if not labels:
            raise CLIError("this LSeg model needs --labels \"sky, road, car, other\"")
    elif labels:
        raise CLIError(f"--labels needs a language-driven model (lseg-*); {args.model} has fixed classes")

    seg = attnseg.Segmenter(model, size=args.size,
                                          inference=InferenceConfig(work=WorkLimit(max_pixels=args.max_work_pixels)))
    try:
        rgb = read_image(args.image)
        x, (H, W) = seg.preprocess(rgb)
    except (ImageReadError, WorkSizeError) as e:
        raise CLIError(f"{args.image}: {e}" if isinstance(e, WorkSizeError) else str(e)) from None
    if not (0 <= py < H and 0 <= px < W):
        raise CLIError(f"--pixel {py},{px} is outside the {H}x{W} image")
    h, w = x.shape[-2:]

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


def cmd_isr_sweep(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model_arg(args)
    if not hasattr(model, "set_isr"):
        raise CLIError(f"{args.model} has no spatial-reduction attention to reduce")
    ds = eval_dataset(args)
    grid = args.settings.split(";") if args.settings else DEFAULT_GRID
    img = ds[0]["image"]
    size = tuple(args.size) if args.size else tuple(img.shape[-2:])
    meta = model.meta
    rows = sweep(model, ds, grid, size, meta["mean"], meta["std"], latency_iters=args.latency_iters)
    write_outputs(rows, Path(args.out), size, f"{model.variant}: ISR on {args.dataset} {args.split}")
    print(markdown(rows, size))
    print(f"wrote {args.out}/isr_sweep.json, isr_sweep.md, isr_sweep.png")
    return 0


def _source_id(src: str) -> str:
    """What a model source names: a file's SHA-256 (a retrained file at the same path is another model), else
    the registry or hub name itself."""
    p = Path(src)
    if not p.is_file():
        return src
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _robustness_models(args, ds) -> dict:
    """--model sources loaded and named for the table: a checkpoint by its run folder (runs/x/final -> x)."""
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
    return models


def _robustness_evaluation(args):
    """In a Ray actor: the models, dataset and settings of this robustness run (ray_engine.evaluate)."""
    from functools import partial

    from ..analysis.robustness import entry, variant
    from ..ray_engine.evaluate import Evaluation

    ds = eval_dataset(args)
    models = _robustness_models(args, ds)
    return Evaluation({n: entry(m, ds) for n, m in models.items()}, partial(variant, ds), inference_config(args),
                      args.device, ds.num_classes)


def _robustness_on_ray(args, ds, models, todo, done, on_row) -> list:
    """--engine ray: every (job, image) a row; each job's row is appended to the partial file when complete."""
    from functools import partial

    from ..analysis.robustness import make_row, ordered
    from ..engine.metrics import metrics_from_confusion
    from ..ray_engine.evaluate import evaluate as evaluate_on_ray

    have = {(r["model"], r["corruption"], r["severity"]) for r in done}
    pending = [j for j in todo if any((n, *j) not in have for n in models)]
    workers, threads = start_ray(args, f"{len(pending)} job(s) of {len(ds)} image(s)")
    rows = list(done)

    def on_result(job, name, mat):
        if (name, *job) not in have:
            row = make_row(name, job, metrics_from_confusion(torch.as_tensor(mat)))
            rows.append(row)
            on_row(row)

    _, report = evaluate_on_ray(len(ds), partial(_robustness_evaluation, args), workers, threads,
                                args.gpus_per_worker, args.batch, jobs=pending, on_result=on_result)
    if report.interrupted:
        raise CLIError(f"interrupted; the finished evaluations are in {args.out}/robustness.partial.jsonl and "
                       "running the same command again does only the rest")
    return ordered(rows, models, todo)


def cmd_robustness(args) -> int:
    require_plots()
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
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
    check_out_dir(Path(args.out))
    ds = eval_dataset(args)
    models = _robustness_models(args, ds)
    inference = inference_config(args)
    # An hour per model on a small CPU: every finished evaluation is appended to a partial file, and a run
    # stopped for any reason continues from it when started again with the same settings and --out.
    partial = Path(args.out) / "robustness.partial.jsonl"
    setting = {"dataset": args.dataset, "data_root": str(Path(args.data_root).resolve()), "split": args.split,
               "limit": args.limit, "mode": args.mode, "crop": list(args.crop),
               "stride": list(args.stride) if args.stride else None}
    marks = {name: _source_id(src) for name, src in zip(models, args.model)}
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

    if args.engine == "ray":
        rows = _robustness_on_ray(args, ds, models, jobs(severities, corruptions), done, on_row)
    else:
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

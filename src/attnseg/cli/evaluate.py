"""`attnseg eval`, `score` and `fewshot`: metrics of a model on a dataset split, of label maps already written,
and of an LSeg model zero-shot on the few-shot benchmarks."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from ..data import DatasetError, build_dataset
from ..data.fewshot import BACKGROUND, DEFAULT_SPLIT, PROTOCOLS, build_benchmark
from ..engine.distributed import cleanup, init_distributed, is_main
from ..engine.evaluate import ScoreError, evaluate, score_label_maps
from ..engine.fewshot import ZeroShotLSeg, evaluate_episodes
from ..engine.metrics import format_table
from ..io import ImageReadError, atomic_write_text
from . import options
from .common import (CLIError, amp_dtype, check_device, check_file_out, check_onnx_size, check_out_dir,
                     eval_dataset, inference_config, is_language_driven, load_model_arg, read_labels, require_plots,
                     start_ray)


def add_arguments(verb: str, p):
    return {"eval": _eval_arguments, "score": _score_arguments, "fewshot": _fewshot_arguments}[verb](p)


def _eval_arguments(p):
    options.add_model(p)
    options.add_dataset(p)
    options.add_inference_mode(p, crop_help="slide window, N or HxW")
    p.add_argument("--scales", type=options.scales, default=[1.0],
                   help="multi-scale test, e.g. 0.5,0.75,1.0,1.25,1.5,1.75")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scale", type=options.pair, default=None, help="keep-ratio resize before inference, e.g. 2048x512")
    options.add_work_limit(p)
    options.add_isr(p)
    p.add_argument("--fb-background", type=options.int_range(0, 65535), default=None,
                   help="report FB-IoU with this background class")
    options.add_labels(p, "LSeg: labels in class order (e.g. synonyms), comma-separated",
                       "LSeg: labels in class order, one per line")
    options.add_limit(p)
    options.add_out(p, help="write metrics as JSON here")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write confusion.png (normalised confusion matrix) and per_class_iou.png here")
    options.add_device(p)
    options.add_backend(p)
    options.add_threads(p)
    options.add_dtype(p)
    options.add_engine(p, "the images are evaluated")
    options.add_batch(p, 256, 4, "--engine ray: images per actor batch (default 4)")
    return cmd_eval


def _score_arguments(p):
    p.add_argument("predictions", help="folder of label maps (NAME.png per image, as `attnseg predict` writes)")
    options.add_dataset(p)
    options.add_limit(p, "only the first N images of the split")
    options.add_out(p, help="write metrics as JSON here")
    return cmd_score


def _fewshot_arguments(p):
    options.add_model(p)
    p.add_argument("--benchmark", choices=["pascal5i", "coco20i", "fss1000"], required=True)
    options.add_data_root(p, help="folder holding VOC2012/, COCO2014/ or FSS-1000/")
    p.add_argument("--splits", required=True, help="HSNet's data/splits folder (pascal/, coco/, fss/)")
    p.add_argument("--folds", type=lambda s: [int(v) for v in s.split(",")], default=[0],
                   help="comma-separated folds (PASCAL/COCO 0..3; FSS-1000 has one split: 0)")
    options.add_split(p, None, "split to evaluate (default: val for PASCAL-5i and COCO-20i, test for FSS-1000, as "
                               "LSeg and HSNet evaluate)")
    p.add_argument("--protocol", choices=["lseg", "hsnet"], default="lseg",
                   help="episode schedule, mask reading and scoring size of LSeg's evaluation (default, 480) or "
                        "HSNet's (400); the LSeg page of the documentation says which to use")
    p.add_argument("--label-words", choices=["lseg", "readable"], default=None,
                   help="class words given to the text encoder: lseg (LSeg's label files: 'trafficlight', "
                        "'tvmonitor', FSS names with underscores; background 'others') or readable ('traffic "
                        "light', spaces; background 'other'); default: lseg under --protocol lseg, else readable")
    p.add_argument("--episodes", type=options.int_range(1), default=None,
                   help="episodes per fold (default: the protocol's: 1000 for PASCAL-5i, wrapping around the "
                        "fold's list, and COCO-20i; every query for FSS-1000: 2,160 on test under lseg)")
    p.add_argument("--original-size", action="store_true",
                   help="score at the original mask size (HSNet's --use_original_imgsize)")
    p.add_argument("--shots", type=options.int_range(1, 100), default=1,
                   help="support images drawn per episode (unused zero-shot)")
    options.add_seed(p, "episode sampling seed (default 0)")
    options.add_size(p, options.int_range(16, 8192), None,
                     "square input (and scoring) size; default the protocol's (480 lseg, 400 hsnet)")
    p.add_argument("--background", default=None,
                   help="the background label (default: 'others' with LSeg's words, 'other' with readable ones)")
    options.add_out(p, help="write results as JSON here")
    options.add_device(p)
    return cmd_fewshot


def cmd_eval(args) -> int:
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out:
        check_file_out(args.out)
    if args.plot:
        require_plots()
        check_out_dir(Path(args.plot))
    ran = {"backend": args.backend, "dtype": args.dtype}
    if args.engine == "ray":
        m, ds = _eval_on_ray(args)
    else:
        rank, world, _ = init_distributed(torch.device(args.device).type)
        try:
            ev, ds = _evaluation(args)
            (model, mean, std, kwargs), = ev.entries.values()
            ran = {"backend": getattr(model, "backend", "eager"), "dtype": getattr(model, "precision", "fp32")}
            m = evaluate(model, ds, ev.inference, mean, std, args.device, ds.num_classes, rank, world,
                         amp_dtype=ev.amp_dtype, background=args.fb_background, model_kwargs=kwargs)
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
                                                    "scales": args.scales, "flip": args.flip, **ran,
                                                    "class_names": ds.class_names, **m},
                                                   indent=2))
            print(f"wrote {args.out}")
        if args.plot:
            from ..plots import confusion_plot, iou_bars

            names = ds.class_names
            confusion_plot(m["confusion"], names, Path(args.plot) / "confusion.png")
            iou_bars(m["IoU"], names, Path(args.plot) / "per_class_iou.png",
                     f"{Path(str(args.model)).name} on {args.dataset} {args.split}")
            print(f"wrote {args.plot}/confusion.png, {args.plot}/per_class_iou.png")
    return 0


def _evaluation(args):
    """The model (loaded, checked against the dataset, --isr applied), dataset and settings `eval` names, as a
    ray_engine Evaluation (so one process, torchrun ranks and Ray actors evaluate the same thing), and the dataset."""
    from ..ray_engine.evaluate import Evaluation

    inference = inference_config(args, args.scales, args.flip)
    model = load_model_arg(args)
    check_onnx_size(model, args)
    ds = eval_dataset(args, args.scale)
    k = getattr(model, "num_classes", None)
    model_kwargs = {}
    if is_language_driven(model):  # LSeg: evaluate with --labels (renamed classes) or the dataset's names
        model_kwargs["labels"] = read_labels(args) or ds.class_names
        if len(model_kwargs["labels"]) != ds.num_classes:
            raise CLIError(f"--labels gives {len(model_kwargs['labels'])} labels for {ds.num_classes} classes")
    elif k is not None and k != ds.num_classes:
        raise CLIError(f"model has {k} classes but dataset {args.dataset} has {ds.num_classes}")
    meta = getattr(model, "meta", {}) or {}
    entry = (model, meta.get("mean"), meta.get("std"), model_kwargs)
    return Evaluation({str(args.model): entry}, lambda job: ds, inference, args.device, ds.num_classes,
                      amp_dtype(model)), ds


def _eval_on_ray(args):
    """--engine ray: each actor builds the same Evaluation; the summed confusion matrix gives the metrics."""
    from functools import partial

    from ..engine.metrics import metrics_from_confusion
    from ..ray_engine.evaluate import evaluate as evaluate_on_ray

    _, ds = _evaluation(copy.copy(args))  # checks every option before the cluster starts
    workers, threads = start_ray(args, f"{len(ds)} image(s)")
    mats, report = evaluate_on_ray(len(ds), partial(_built, args), workers, threads, args.gpus_per_worker, args.batch)
    if report.interrupted:
        raise CLIError("interrupted; nothing was written")
    (mat,) = mats.values()
    m = metrics_from_confusion(torch.as_tensor(mat), args.fb_background)
    m.update(images=len(ds), confusion=mat.tolist())
    print(f"evaluated {len(ds)} image(s) in {report.seconds:.1f} s on {workers} worker(s)"
          + (f"; {len(report.restarts)} worker process(es) died and were restarted by Ray, their images run again"
             if report.restarts else ""), file=sys.stderr)
    return m, ds


def _built(args):
    return _evaluation(args)[0]


def cmd_score(args) -> int:
    """Score label maps already written (by `attnseg predict` or any tool) against a dataset's ground truth."""
    if args.out:
        check_file_out(args.out)
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


def cmd_fewshot(args) -> int:
    model = load_model_arg(args)
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

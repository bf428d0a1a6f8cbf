"""Argument types and the argument groups verbs share: each option is declared here once.

Nothing here imports torch: `attnseg --help` and `attnseg models` stay fast.
"""
from __future__ import annotations

import argparse
import math

from ..worksize import MAX_THREADS, MAX_WORK_PIXELS, MAX_WORK_SIDE, MIN_WORK_SIDE, parse_short_side


class HelpFormatter(argparse.HelpFormatter):
    """One --help layout on every supported Python: an option with a short and a long form names its value once
    (`-o, --out OUT`), as Python 3.13's argparse prints it (earlier versions print `-o OUT, --out OUT`)."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return ", ".join(action.option_strings) + " " + self._format_args(
            action, self._get_default_metavar_for_optional(action))


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `attnseg predict: error: argument --alpha: ...` and exit 2, and the same
    --help layout on every Python (`HelpFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- value types -------------------------------------------------------------------------------------------------

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
            raise argparse.ArgumentTypeError(f"{v} is out of range; expected an integer in {lo}..{hi if hi else 'inf'}")
        return v
    return parse


def float_range(lo: float, hi: float, lo_open: bool = False):
    def parse(s: str) -> float:
        v = _number(s, float)
        if v < lo or (lo_open and v == lo) or v > hi:
            raise argparse.ArgumentTypeError(f"{s} is out of range; expected a number in {'(' if lo_open else '['}{lo}, {hi}]")
        return v
    return parse


def short_side(s: str):
    """--size: auto (the model's working size), native, or a short side in pixels."""
    try:
        return parse_short_side(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def pair(s: str) -> tuple[int, int]:
    """N or HxW (sides 1..16384)."""
    parts = s.lower().replace("x", ",").split(",")
    try:
        v = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {s!r}") from None
    if len(v) > 2 or min(v) < 1 or max(v) > 16384:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides in 1..16384, got {s!r}")
    return (v[0], v[0]) if len(v) == 1 else v[:2]


def scales(s: str) -> list[float]:
    """--scales: comma-separated finite numbers in (0, 8]."""
    return [float_range(0.0, 8.0, lo_open=True)(v) for v in s.split(",")]


# -- argument groups -----------------------------------------------------------------------------------------------

DATASETS_HELP = "camvid, ade20k, cityscapes, voc, pascal_context[59], coco_stuff164k, folder"


def add_model(p: argparse.ArgumentParser, required: bool = True, help: str | None = None,
              loading: bool = True, arch: bool = True, many: bool = False) -> None:
    """--model (repeatable with `many`), --arch with `arch`; with `loading`, the options of loading a checkpoint
    (--text-encoder, --model-option)."""
    p.add_argument("--model", required=required, default=None, action="append" if many else "store",
                   help=help or "shipped model name, checkpoint file/dir, or hub id (org/name)")
    if arch:
        add_arch(p)
    if loading:
        p.add_argument("--text-encoder", default=None,
                       help="LSeg: text encoder spec overriding the checkpoint's: minilm, clip:ID_OR_DIR, hf:DIR")
        p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                       help="override a model config field when loading, e.g. predict=mask for SANet (repeatable)")


def add_size(p, type_, default, help: str) -> None:
    """--size: what it sizes differs per verb (a short side, HxW, a square side); the type says which."""
    p.add_argument("--size", type=type_, default=default, help=help)


def add_batch(p, hi: int, default: int, help: str | None = None) -> None:
    p.add_argument("--batch", type=int_range(1, hi), default=default, help=help)


def add_arch(p) -> None:
    p.add_argument("--arch", default=None,
                   help="architecture for checkpoints that do not record it (official .pth), e.g. segformer-b2")


def add_num_classes(p, default: int = 150, hi: int = 4096, help: str | None = None) -> None:
    p.add_argument("--num-classes", type=int_range(1, hi), default=default,
                   help=help or f"classes (LSeg: number of labels); default {default}")


def add_device(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")


def add_json(p, help: str = "also print the result as one JSON line") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_threads(p) -> None:
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=None, help="CPU threads (default: torch's)")


def add_isr(p, help: str = "inference spatial reduction ENC[:DEC], e.g. 2,2,1,1:2,2,2") -> None:
    p.add_argument("--isr", default=None, help=help)


def add_dataset(p, split: str | None = "val", required: bool = True, help_split: str | None = None,
                dataset: str | None = None, root: str | None = None) -> None:
    """--dataset, --data-root and --split (required unless defaults are given)."""
    required = required and dataset is None
    p.add_argument("--dataset", required=required, default=dataset, help=DATASETS_HELP)
    add_data_root(p, False, root)
    add_split(p, split, help_split or f"split (default {split})")


def add_data_root(p, required: bool = True, default: str | None = None,
                  help: str = "the dataset's folder (default: $ATTNSEG_DATA/DATASET)") -> None:
    """--data-root; a dataset's is optional: without it the dataset is looked for under $ATTNSEG_DATA
    (data.datasets.resolve_root)."""
    p.add_argument("--data-root", required=required, default=default, help=help)


def add_split(p, default: str | None, help: str) -> None:
    p.add_argument("--split", default=default, help=help)


def add_limit(p, what: str = "only the first N images") -> None:
    p.add_argument("--limit", type=int_range(1), default=None, help=what)


def add_inference_mode(p, crop_help: str | None = None) -> None:
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--crop", type=pair, default=(512, 512), help=crop_help or "slide window, N or HxW")
    p.add_argument("--stride", type=pair, default=None, help="slide stride, N or HxW (default: 2/3 of the crop)")


def add_labels(p, labels_help: str = 'LSeg: comma-separated labels, e.g. "sky, road, car, other"',
               file_help: str = "LSeg: labels, one per line") -> None:
    p.add_argument("--labels", default=None, help=labels_help)
    p.add_argument("--labels-file", default=None, help=file_help)


BACKENDS = ("auto", "eager", "onnx", "openvino")
BACKEND_HELP = ("auto (default): the fastest backend and precision measured on this CPU among those whose accuracy "
                "holds (exact fp32 paths; for a shipped model also bf16/int8 paths whose recorded CamVid mIoU is "
                "within 0.3 of fp32), timed once and kept per machine (attnseg tune shows the table); eager: "
                "PyTorch; onnx: onnxruntime; openvino: OpenVINO on the CPU (pip install 'attnseg[onnx]' or "
                "'attnseg[openvino]')")
PRECISIONS = ("fp32", "bf16", "int8", "int8-bf16")


def add_backend(p, choices=BACKENDS, help: str | None = BACKEND_HELP, default: str | None = None) -> None:
    p.add_argument("--backend", choices=list(choices), default=default or ("auto" if "auto" in choices else "eager"),
                   help=help)


def add_dtype(p, choices=PRECISIONS, default: str | None = None,
              help: str | None = "the precision: bf16 (autocast for eager models, OpenVINO's inference precision; "
                                 "needs AVX512-BF16 or AMX), int8 or int8-bf16 (the int8 graphs shipped with the "
                                 "trained models; onnx, openvino); default: fp32, or what --backend auto chose") -> None:
    p.add_argument("--dtype", choices=list(choices), default=default, help=help)


def add_max_pixels(p, default: int | None, help: str) -> None:
    p.add_argument("--max-pixels", type=int_range(1), default=default, help=help)


def add_work_limit(p, default: int = MAX_WORK_PIXELS, help: str | None = None) -> None:
    p.add_argument("--max-work-pixels", type=int_range(MIN_WORK_SIDE ** 2), default=default,
                   help=help or f"most pixels one model input may have after resizing (default {default:,} = "
                                f"2048x2048); larger working sizes are shrunk to fit, long sides capped at "
                                f"{MAX_WORK_SIDE}; aspect ratios beyond {MAX_WORK_SIDE // MIN_WORK_SIDE}:1 are refused")


def add_config(p, required: bool = False,
               help: str = "YAML file of overrides, or a shipped config by name (e.g. sanet-effnet-lite0_camvid)") -> None:
    """--config FILE and --set KEY=VALUE (repeatable): a training config and its overrides."""
    p.add_argument("--config", required=required, default=None, help=help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iters=1000 (repeatable)")


def add_seed(p, help: str = "random seed (default 0)") -> None:
    p.add_argument("--seed", type=int_range(0), default=0, help=help)


def add_out(p, required: bool = False, default=None, help: str = "output folder") -> None:
    p.add_argument("--out", required=required, default=default, help=help)


def add_engine(p, what: str, serve: bool = False) -> None:
    """--engine local|ray and where the Ray job runs (pip install 'attnseg[ray]'; imported only for ray)."""
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help=f"local (default): {what} in this process; ray: on a Ray cluster (pip install 'attnseg[ray]')")
    p.add_argument("--address", default=None,
                   help="--engine ray: the cluster: auto (the one `ray start` began here) or ray://HOST:10001; "
                        "default: start a local Ray instance on this machine's cores")
    p.add_argument("--connect-timeout", type=float_range(0.5, 3600.0), default=30.0, metavar="SECONDS",
                   help="--engine ray: how long to wait for the cluster at --address to answer (default 30)")
    if serve:
        p.add_argument("--replicas", type=int_range(1, 1024), default=1,
                       help="--engine ray: Ray Serve replicas, each loading the models once (default 1)")
        p.add_argument("--max-replicas", type=int_range(1, 1024), default=None,
                       help="--engine ray: autoscale between --replicas and this many, on ongoing requests")
        return
    p.add_argument("--workers", type=int_range(1, 100000), default=None,
                   help="--engine ray: model actors (default: the cluster's CPUs / --threads)")
    p.add_argument("--gpus-per-worker", type=float_range(0.0, 64.0), default=0.0,
                   help="--engine ray: GPUs per actor (e.g. 1, or 0.5 to share one); with --device cuda")


def add_overwrite(p, help: str) -> None:
    """--overwrite: redo what an earlier run left in the output (a training run's folder, finished images)."""
    p.add_argument("--overwrite", action="store_true", help=help)

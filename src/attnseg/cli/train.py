"""`attnseg train`: a YAML config (and --set overrides) in, a training run out (torchrun for multi-process)."""
from __future__ import annotations

from . import options
from .common import CLIError


def add_arguments(verb: str, p):
    options.add_config(p)
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/latest.pth")
    p.add_argument("--work-dir", default=None, help="output folder (overrides train.work_dir)")
    options.add_overwrite(p, "replace the run already in the work dir")
    return cmd_train


def cmd_train(args) -> int:
    from ..data import DatasetError
    from ..engine.config import ConfigError, load_config
    from ..engine.train import TrainingError, train
    from ..io import ImageReadError

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

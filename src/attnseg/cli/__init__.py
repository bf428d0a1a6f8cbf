"""`attnseg <verb>`: the command-line interface, a thin skin over the library.

Each verb lives in one module of this package (`predict`, `train`, `evaluate`, `export`, `analyse`, `serve`,
`models`), which declares its arguments (`add_arguments(verb, parser)`, from the shared groups in `options`)
and converts them into typed values for the library. `main` imports only the module of the verb it runs, so
`attnseg --help` and `attnseg models` never import torch.
"""
from __future__ import annotations

import importlib
import sys

from .options import Parser

# verb -> (module in this package, one-line help); the order is `attnseg --help`'s
VERBS: dict[str, tuple[str, str]] = {
    "models": ("models", "list model variants with parameter counts"),
    "predict": ("predict", "segment images; writes NAME.png label maps and NAME_overlay.jpg"),
    "train": ("train", "train a model from a YAML config (torchrun for multi-process)"),
    "eval": ("evaluate", "evaluate a model on a dataset split (aAcc, mAcc, mIoU, per-class table)"),
    "score": ("evaluate", "score label maps written by `predict` against a dataset split's ground truth"),
    "fewshot": ("evaluate", "zero-shot LSeg on few-shot benchmarks (PASCAL-5i, COCO-20i, FSS-1000)"),
    "export": ("export", "export to ONNX or OpenVINO IR (dynamic shapes, ISR baked in; int8 with --quantize)"),
    "flops": ("analyse", "GFLOPs (MACs) and parameters at an input size"),
    "benchmark": ("analyse", "latency, throughput and peak memory"),
    "tune": ("analyse", "time every backend and precision eligible for a model on this machine; keep the fastest"),
    "explain": ("analyse", "attention maps of one pixel in every attention layer (PNGs)"),
    "robustness": ("analyse", "mIoU under the 16 Cityscapes-C corruptions (table, JSON, CSV, plot)"),
    "erf": ("analyse", "effective receptive field of each encoder stage and the decoder (a PNG)"),
    "serve": ("serve", "web page and HTTP API over loaded models (pip install 'attnseg[serve]')"),
    "isr-sweep": ("analyse", "mIoU / GFLOPs / latency over a grid of ISR settings, with a plot"),
    "label-study": ("analyse", "LSeg: mIoU with the class names, synonyms, shuffled and removed labels"),
    "text-table": ("analyse", "LSeg: precompute prompt embeddings for training without the text encoder"),
}


def build_parser(verbs=None) -> Parser:
    """The parser with every verb listed; arguments are added for `verbs` (default: all of them)."""
    from .. import __version__

    ap = Parser(prog="attnseg", description="Attention-based semantic segmentation.")
    ap.add_argument("--version", action="version", version=f"attnseg {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    wanted = set(VERBS) if verbs is None else set(verbs)
    for verb, (module, help_) in VERBS.items():
        p = sub.add_parser(verb, help=help_)
        if verb in wanted:
            mod = importlib.import_module(f".{module}", __name__)
            p.set_defaults(fn=mod.add_arguments(verb, p))
    return ap


def _verb(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    from ..notes import print_notes_as_lines
    from .common import CLIError, first_line

    print_notes_as_lines()
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = _verb(argv)
    ap = build_parser([verb] if verb in VERBS else [])
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
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # a library error no verb caught: still one line
        from ..io import WriteFailed
        from ..models.text import TextEncoderError
        from ..ray_engine import RayJobError
        from ..worksize import WorkSizeError

        if not isinstance(e, (WriteFailed, WorkSizeError, TextEncoderError, ImportError, RayJobError)):
            raise
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 1 if isinstance(e, WriteFailed) else 2


if __name__ == "__main__":
    sys.exit(main())

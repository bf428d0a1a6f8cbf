"""What the verbs share at run time: the one-line error, turning options into typed values (a loaded model,
an inference config, labels, checked output paths), and the checks every verb makes the same way."""
from __future__ import annotations

import math
import os
from pathlib import Path


class CLIError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


def first_line(e: BaseException) -> str:
    """io.first_line, imported when called (this module stays light: `attnseg models` imports no numpy)."""
    from ..io import first_line as line

    return line(e)


def is_language_driven(model) -> bool:
    from ..models.lseg import is_language_driven as f

    return f(model)


def load_model_arg(args, backend: str | None = None, check=None, callers: int = 1, precision: str | None = None,
                   source=None):
    """The model --model names, opened by `attnseg.open` on --backend (or `backend`), --dtype, --isr, --threads
    and --device; what auto chose is said with -v. First-time work (timing the candidates, an export) is said
    on a terminal, or with -v. Every failure is one line. check: raises CLIError for options the loaded model
    does not take, before any slow first-time work. precision: instead of --dtype (the weights as loaded: fp32).
    source: instead of --model (predict's default model when none is given)."""
    import sys

    from ..deploy.graphs import is_graph_file
    from ..deploy.runtime import open_model
    from ..isr import IsrError

    over = {"text_encoder": args.text_encoder} if getattr(args, "text_encoder", None) else {}
    over.update(model_options(getattr(args, "model_option", [])))
    source = args.model if source is None else source
    if is_graph_file(source) and not Path(source).is_file():
        raise CLIError(f"--model {source}: file not found")
    try:
        model = open_model(source, backend=backend or getattr(args, "backend", "eager"),
                           precision=precision or getattr(args, "dtype", None), threads=getattr(args, "threads", None),
                           isr=getattr(args, "isr", None), device=getattr(args, "device", "cpu"),
                           arch=getattr(args, "arch", None), options=over or None,
                           verbose=bool(getattr(args, "verbose", False)),
                           progress=bool(getattr(args, "verbose", False)) or sys.stderr.isatty(),
                           callers=callers, check=check)
        if is_language_driven(model):
            model.text_encoder  # noqa: B018 - built now: a missing extra is one line here, not a traceback later
    except IsrError as e:
        raise CLIError(f"--isr {args.isr}: {e}") from None
    except (ValueError, OSError, ImportError, RuntimeError) as e:
        raise CLIError(first_line(e)) from None
    return model


def model_options(items: list[str]) -> dict:
    import yaml

    from .. import yamltext

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--model-option expects KEY=VALUE, got {item[:64]!r}")
        try:
            out[key.strip()] = yamltext.safe_load(value)
        except yaml.YAMLError as e:
            raise CLIError(f"--model-option {key.strip()[:64]}: not a YAML value ({first_line(e)})") from None
    return out


def check_onnx_size(model, args, name=None) -> None:
    """A fixed-size graph runs one input size: whole images are resized to it (Segmenter.working_size); slide
    windows must be that size. name: the model's name in the message (default --model)."""
    fixed = getattr(model, "fixed_size", None)
    if fixed and getattr(args, "mode", "whole") == "slide" and tuple(args.crop) != fixed:
        raise CLIError(f"{args.model if name is None else name} is a fixed-size graph ({fixed[0]}x{fixed[1]}); use --crop "
                       f"{fixed[0]}x{fixed[1]} or export with --dynamic")


def check_out_dir(out: Path) -> None:
    if out.is_symlink() and not out.exists():
        raise CLIError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; create that "
                       "folder or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create --out {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out} is not writable; choose another folder")


def check_file_out(path: str, flag: str = "--out") -> Path:
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


def amp_dtype(model):
    """torch.bfloat16 for an eager model opened in bf16 (run under autocast), else None."""
    import torch

    return torch.bfloat16 if isinstance(model, torch.nn.Module) and getattr(model, "precision", None) == "bf16" \
        else None


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


def inference_config(args, scales=None, flip=False):
    from ..inference.modes import InferenceConfig, WorkLimit

    stride = args.stride or tuple(max(1, math.ceil(c * 2 / 3)) for c in args.crop)
    work = WorkLimit(max_pixels=args.max_work_pixels)
    try:
        return InferenceConfig(mode=args.mode, crop=args.crop, stride=stride, scales=scales or [1.0], flip=flip,
                               work=work)
    except ValueError as e:
        raise CLIError(f"--stride/--crop: {e}") from None


def read_labels(args) -> list[str] | None:
    """--labels "a, b, c" or --labels-file (one per line); duplicates and empty labels are errors."""
    from ..models.text import TextEncoderError, check_labels

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


def require_plots() -> None:
    from ..plots import PlotUnavailable, pyplot

    try:
        pyplot()
    except PlotUnavailable as e:
        raise CLIError(str(e)) from None


def eval_dataset(args, scale=None):
    """--dataset/--data-root/--split at native resolution (or resized keeping the ratio to `scale`, (W, H)),
    first --limit samples; one-line errors."""
    from ..data import DatasetError, EvalTransform, build_dataset

    try:
        ds = build_dataset(args.dataset, args.data_root, args.split, EvalTransform(tuple(scale) if scale else None))
    except DatasetError as e:
        raise CLIError(str(e)) from None
    if args.limit:
        ds.samples = ds.samples[: args.limit]
    return ds


def model_from_name_or_source(args, fixed_labels: bool = False):
    """Registered architecture name -> random weights (for speed/FLOPs); anything else -> load_model.
    With `fixed_labels`, an LSeg model is wrapped to take images only, with --num-classes random label
    embeddings (speed and FLOPs do not depend on the label text, and no text encoder is loaded)."""
    import attnseg
    from ..models import MODELS, has_classifier

    if args.model in MODELS:
        model = attnseg.create_model(args.model, **({"num_classes": args.num_classes}
                                                    if has_classifier(args.model) else {}))
    else:
        model = load_model_arg(args, backend="eager", precision="fp32")  # --dtype is the caller's to apply
    if fixed_labels:
        from ..models.lseg import FixedLabels, LSeg

        if isinstance(model, LSeg):  # an LSeg ONNX graph already takes its label embeddings as an input
            model = FixedLabels(model, args.num_classes)
    return model


def apply_isr_arg(model, args) -> None:
    from ..isr import IsrError, apply

    if not getattr(args, "isr", None):
        return
    try:
        apply(model, args.isr)
    except IsrError as e:
        raise CLIError(f"--isr {args.isr}: {e}") from None


def connect_ray(args) -> float:
    """--engine ray: join (or start) the cluster --address names; returns the seconds it took."""
    import sys

    from ..ray_engine import RayUnavailable, connect

    try:
        return connect(args.address, timeout_s=args.connect_timeout,
                       say=lambda line: print(line, file=sys.stderr, flush=True))
    except (RayUnavailable, ConnectionError) as e:
        raise CLIError(str(e)) from None


def start_ray(args, what: str) -> tuple[int, int | None]:
    """--engine ray: connect_ray, then (actors, threads per actor): --workers
    (default: the cluster's CPUs / threads) and --threads (default 1 per actor on CPUs, torch's with GPUs)."""
    import sys

    from ..ray_engine import cluster_cpus

    gpus = getattr(args, "gpus_per_worker", 0)
    if gpus and not args.device.startswith("cuda"):
        raise CLIError("--gpus-per-worker needs --device cuda")
    startup = connect_ray(args)
    threads = args.threads or (None if gpus else 1)
    workers = args.workers or max(1, cluster_cpus() // (threads or 1))
    print(f"Ray: connected in {startup:.1f} s; {workers} worker(s) x {threads or 'default'} thread(s) over {what}",
          file=sys.stderr)
    return workers, threads

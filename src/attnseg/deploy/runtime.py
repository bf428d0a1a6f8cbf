"""`attnseg.open(source, backend="auto", ...)`: a name, checkpoint, .onnx or .xml turned into a runnable model
on the backend and precision asked for, or, with `auto`, the fastest eligible one measured on this machine
(deploy.tune). The CLI, the server, the Ray actors and the benchmarks all open models here."""
from __future__ import annotations

import sys
import time
from functools import lru_cache
from pathlib import Path

from .backends import BACKENDS, BackendError, Source
from .backends.cpu import this_machine
from ..worksize import MAX_THREADS
from .tune import (NOT_READY, Candidate, candidates, choice_key, choices_file, keep_choice, machine_line,
                   read_choice, recorded, tune)

BACKEND_NAMES = ("auto", *BACKENDS)


class OpenError(ValueError):
    """The source cannot be opened as asked; the message is one line saying why and what to pass instead."""


def open_model(source, backend: str = "auto", precision: str | None = None, threads: int | None = None,
               isr: str | None = None, device: str = "cpu", *, arch: str | None = None,
               options: dict | None = None, size: tuple[int, int] | None = None, verbose: bool = False,
               progress=True, retune: bool = False, callers: int = 1, calibration=None, check=None):
    """A runnable model (`attnseg.Segmenter` takes it) with `backend`, `precision` and `choice` (one line: what
    runs and why).

    source: a registered or shipped name, a checkpoint (file, folder, hub id), an .onnx or OpenVINO .xml graph,
    or a PyTorch model. backend: auto (default), eager, onnx or openvino. precision: fp32, bf16, int8 or
    int8-bf16 (None: fp32, or auto's choice). threads: the runtime's threads, 1..1024 (None: its default). isr: an ISR
    setting (EDAFormer), applied to the model or baked into its graph. device: cpu, or cuda[:N] (eager).
    arch/options: `load_model`'s architecture name and model options. size: (h, w) auto times at (default: a
    4:3 image at the model's working size). verbose: say what auto chose and why on stderr. progress: True
    (stderr), False, or a callable taking one line, for slow first-time work (exports, conversions, timing).
    retune: measure again even if a choice is kept for this machine. callers: threads that will call the model
    at once (the video pipeline's workers). calibration: image files or folders; for a model without an
    accuracy record, makes int8 and bf16 eligible for auto where they label these images as fp32 does on at
    least 99% of the pixels (deploy.calibrate; measured once, kept for these weights). check: called with the
    loaded PyTorch model before any export, conversion or timing, so that options that do not fit the model
    fail at once (it raises)."""
    say = _printer(progress)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= MAX_THREADS):
        raise OpenError(f"threads {threads!r}: expected an integer in 1..{MAX_THREADS} (None: the runtime's default)")
    if backend not in BACKEND_NAMES:
        raise OpenError(f"backend {backend!r}: expected one of {', '.join(BACKEND_NAMES)}")
    src = resolve(source, arch, options, device, isr, say)
    if check is not None and src.module is not None:
        check(src.module)
    if calibration is not None:
        _calibrate(src, calibration, threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if device != "cpu" and backend in ("auto", "eager"):
        cand, why, timed = Candidate("eager", precision or "fp32"), f"eager PyTorch on {device} (graphs run on the CPU)", None
    elif backend == "auto":
        cand, why, timed = choose(src, precision, threads, size, say, retune)
    else:
        cand, why, timed = Candidate(backend, precision or "fp32"), "asked for", None
    b = BACKENDS[cand.backend]
    problem = b.missing() or b.unsupported(cand.precision, this_machine(), src)
    if problem:
        raise OpenError(f"--backend {cand.backend} --dtype {cand.precision}: {problem}")
    try:  # the model auto just timed is the one to run, unless several threads will call it
        model = timed if timed is not None and callers == 1 else \
            b.prepare(src, cand.precision, threads, _size(src, size) if cand.fixed else None, callers)
    except BackendError as e:
        raise OpenError(f"{src.name} on {cand}: {e}") from None
    model.choice = (f"{src.name} runs on {model.backend} {getattr(model, 'precision', cand.precision)}"
                    f"{' (fixed size)' if cand.fixed else ''}: {why}")
    if verbose:
        say(model.choice)
    return model


def _printer(progress):
    if callable(progress):
        return progress
    if progress:
        return lambda line: print(f"attnseg: {line}", file=sys.stderr, flush=True)
    return None


def resolve(source, arch=None, options=None, device="cpu", isr=None, say=None) -> Source:
    """What `source` is: a loaded PyTorch model (with its shipped graphs and accuracy record) or a graph file."""
    import torch

    from .graphs import file_sha256, is_graph_file, shipped_graphs, weights_key

    if isinstance(source, torch.nn.Module):
        module, name = source.eval(), str(getattr(source, "source", None) or getattr(source, "variant", "model"))
    elif is_graph_file(source):
        path = Path(source)
        if not path.is_file():
            raise OpenError(f"{source}: file not found")
        if isr:
            raise OpenError(f"{source} is a graph: ISR is baked in at export (attnseg export --isr {isr})")
        return Source(name=str(source), path=path, key=file_sha256(path), progress=say)
    else:
        import attnseg

        module = attnseg.load_model(source, model=arch, device=device, **(options or {}))
        name = str(source)
    if isr:
        from ..isr import apply

        apply(module, isr)
    from ..models.lseg import is_language_driven

    if is_language_driven(module):
        module.text_encoder  # noqa: B018 - built first: a missing extra is one line before any timing
    from ..pretrained import list_pretrained

    shipped = name in list_pretrained() and not options and arch is None
    key = weights_key(module)
    if shipped and not isinstance(source, (str, Path)):  # a model passed in: shipped only with the same weights
        shipped = key == _shipped_key(name)
    src = Source(name=name, module=module, graphs=shipped_graphs(name) if shipped else {},
                 key=key, record=recorded().get(name) if shipped else None, isr=isr, progress=say)
    if src.record is None:
        from .calibrate import kept

        kept(src)  # agreement measured on calibration images for these weights earlier
    return src


def _calibrate(src: Source, images, threads) -> None:
    from .calibrate import CalibrationError, calibrate

    if src.record is not None:
        raise OpenError(f"{src.name} has an accuracy record (CamVid): calibration images are for models without one")
    try:
        calibrate(src, images, threads)
    except CalibrationError as e:
        raise OpenError(str(e)) from None


@lru_cache(maxsize=None)
def _shipped_key(name: str) -> str:
    import attnseg

    from .graphs import weights_key

    return weights_key(attnseg.load_model(name))


def _size(src: Source, size) -> tuple[int, int]:
    """The size auto times at: `size`, else a 4:3 landscape image at the model's working short side."""
    if size:
        return tuple(size)
    from types import SimpleNamespace

    from ..inference.segmenter import FALLBACK_SHORT_SIDE, working_short_side

    holder = src.module if src.module is not None else SimpleNamespace(meta=_graph_meta(src.path))
    short = working_short_side(holder) or FALLBACK_SHORT_SIDE
    return short, round(short * 4 / 3)


def _graph_meta(path) -> dict:
    try:
        from .backends.openvino import _graph_info

        return _graph_info(Path(path))
    except Exception:  # noqa: BLE001 - no metadata: the default working size
        return {}


def _timing_kwargs(src: Source) -> dict:
    """LSeg runs with label embeddings (random, unit length: speed does not depend on the text)."""
    from ..models.lseg import is_language_driven

    if src.module is not None and not is_language_driven(src.module):
        return {}
    if src.module is None and not _graph_meta(src.path).get("text_encoder"):
        return {}
    import torch

    n = len((getattr(src.module, "default_labels", None) or []) or range(11))
    dim = src.module.head1.out_channels if src.module is not None else 512
    return {"text_embeddings": torch.nn.functional.normalize(torch.randn(n, dim), dim=1)}


def choose(src: Source, precision, threads, size, say, retune=False) -> tuple[Candidate, str, object]:
    """auto: the kept choice for this model on this machine, else measure every eligible candidate now;
    (candidate, why, its prepared model when it was just timed)."""
    machine = this_machine()
    if src.module is None:  # a graph file runs in its own runtime
        return Candidate("openvino" if src.path.suffix == ".xml" else "onnx", precision or "fp32"), \
            f"the runtime of a {src.path.suffix} graph", None
    cands, skipped = candidates(src, machine, precision, convert=False)
    if not cands:
        raise OpenError(f"{src.name}: no backend can run it here ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    if len(cands) == 1:
        later = [k for k, why in skipped.items() if why == NOT_READY]
        return cands[0], ("the only eligible backend here" if not later else
                          f"the only eligible backend ready here ({', '.join(later)} need a one-time conversion: "
                          f"attnseg tune {src.name} makes and times them)"), None
    size = _size(src, size)
    key = choice_key(src, machine, threads, size, precision)
    kept = None if retune else read_choice(key)
    if kept and any(str(c) == kept["choice"] for c in cands):
        return Candidate.parse(kept["choice"]), _reason(kept, machine, threads, "measured"), None
    entry = measure_candidates(src, cands, skipped, threads, size, precision, say)
    return Candidate.parse(entry["choice"]), _reason(entry, machine, threads, "measured now"), entry.pop("model")


def measure_candidates(src: Source, cands, skipped, threads, size, precision, say=None) -> dict:
    """Time every candidate now and keep the winner for this machine; the kept entry (`attnseg tune` prints it):
    choice, images_per_s per candidate (or why it failed), skipped (candidate: why not eligible), size, machine."""
    machine = this_machine()
    if say:
        say(f"timing {len(cands)} backend/precision candidates for {src.name} at {size[1]}x{size[0]} on this CPU "
            f"(once; the choice is kept in {choices_file()})")
    t0 = time.time()
    rows, winner = tune(src, cands, threads, size, _timing_kwargs(src))
    ok = [(c, ips) for c, ips in rows if isinstance(ips, float)]
    if not ok:
        reasons = {str(r).removeprefix("BackendError: ") for _, r in rows}
        if len(reasons) == 1:  # the same reason everywhere (a file no runtime can run): said once
            raise OpenError(f"{src.name}: {reasons.pop()}")
        raise OpenError(f"{src.name}: every candidate failed ({'; '.join(f'{c}: {r}' for c, r in rows)})")
    entry = {"choice": str(ok[0][0]), "images_per_s": {str(c): (round(r, 2) if isinstance(r, float) else r)
                                                       for c, r in rows},
             "size": list(size), "threads": threads, "machine": machine.describe(), "when": time.time(),
             "seconds": round(time.time() - t0, 1), "skipped": skipped}
    keep_choice(choice_key(src, machine, threads, size, precision), entry)
    if say:
        say(f"chose {entry['choice']} for {src.name} in {entry['seconds']:.1f} s")
    return {**entry, "model": winner}


def tune_model(source, threads: int | None = None, size: tuple[int, int] | None = None,
               precision: str | None = None, progress=True, calibration=None) -> dict:
    """`attnseg tune`: measure every eligible candidate for `source` now (whatever is kept) and keep the winner;
    returns the entry `measure_candidates` keeps, with the model's name. calibration: as `open_model`'s."""
    say = _printer(progress)
    src = resolve(source, say=say)
    if calibration is not None:
        _calibrate(src, calibration, threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    cands, skipped = candidates(src, this_machine(), precision)
    if not cands:
        raise OpenError(f"{src.name}: no backend can run it here")
    entry = measure_candidates(src, cands, skipped, threads, _size(src, size), precision, say)
    entry.pop("model")
    return {"model": src.name, **entry}


def _reason(entry: dict, machine, threads, how: str) -> str:
    ips = entry["images_per_s"]
    best = ips[entry["choice"]]
    others = ", ".join(f"{c} {v}" for c, v in ips.items() if c != entry["choice"] and isinstance(v, float))
    h, w = entry["size"]
    return (f"fastest of the eligible candidates at {w}x{h} on {machine_line(machine, threads)}: {best} img/s "
            f"({how}{'; ' + others if others else ''})")

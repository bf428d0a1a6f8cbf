"""Which reduced precisions a model without an accuracy record may run at, measured on the user's own images.

A shipped model carries its CamVid mIoU per backend and precision (pretrained/precision.json), and `auto` takes
int8 or bf16 where that record holds. A user's checkpoint has no record, so `auto` runs it on exact fp32 paths
only, unless calibration images are given (`attnseg.open(..., calibration=IMAGES)`, `attnseg tune MODEL
--calibration IMAGES`): then an int8 graph is quantized on those images (onnxruntime QDQ, as `attnseg export
--quantize int8` does; kept in the cache), every reduced-precision candidate this machine can run labels the
images, and its pixel agreement with the eager fp32 label maps decides: at least `AGREEMENT` (99%) makes it
eligible. The result is kept in $ATTNSEG_CACHE/agreement.json under the weights' key, so later runs of the same
weights (`attnseg predict`, `serve`) see the same candidates without the images.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .backends import BACKENDS, BackendError, Source
from .backends.cpu import this_machine
from .graphs import cache_root, digest_matches, file_sha256, keep_entry, write_digest
from .tune import AGREEMENT, EXACT

MAX_IMAGES = 32  # calibration images used (evenly spaced over those given)


class CalibrationError(ValueError):
    """The calibration images cannot be used; one line saying why."""


def image_paths(items) -> list[Path]:
    """Image files from paths: files as given, folders searched (sorted), at most MAX_IMAGES, evenly spaced."""
    from ..io import IMAGE_EXTENSIONS
    from .quantize import spaced_indices

    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    found = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise CalibrationError(f"calibration images: {item} is neither an image file nor a folder")
    if not found:
        raise CalibrationError(f"calibration images: none found in {', '.join(map(str, items))} "
                               f"(image files: {', '.join(IMAGE_EXTENSIONS)})")
    return [found[i] for i in spaced_indices(len(found), MAX_IMAGES)]


def _labels_kw(module) -> dict:
    """LSeg labels the calibration images with its own class names."""
    from ..models.lseg import is_language_driven

    if not is_language_driven(module):
        return {}
    labels = getattr(module, "default_labels", None)
    if not labels:
        raise CalibrationError("calibration of an LSeg model needs the labels it runs with (a model saved with "
                               "class names)")
    import torch

    with torch.no_grad():
        return {"text_embeddings": module.text_encoder.encode(labels).float()}


def _label_maps(model, inputs, kw) -> list:
    import torch

    bf16 = isinstance(model, torch.nn.Module) and getattr(model, "precision", "fp32") == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return [model(x, **kw).float().argmax(1) for x in inputs]


def calibrate(src: Source, images, threads: int | None = None) -> dict:
    """Measure every reduced-precision candidate's pixel agreement with fp32 on `images` (paths or folders) for
    `src` (a PyTorch model without an accuracy record), keep it, and set `src.agreement` and, when the int8 graph
    was made, `src.graphs["int8.onnx"]`. Returns the kept entry."""
    from ..inference.segmenter import Segmenter
    from ..io import read_image

    if src.module is None:
        raise CalibrationError(f"{src.name} is a graph: calibration images choose precisions for a PyTorch model")
    paths = image_paths(images)
    seg = Segmenter(src.module)
    try:
        inputs = [seg.preprocess(read_image(p))[0] for p in paths]
    except (OSError, ValueError) as e:
        raise CalibrationError(f"calibration images: {str(e).splitlines()[0]}") from None
    digest = hashlib.sha256(b"".join(file_sha256(p).encode() for p in paths)).hexdigest()[:24]
    kw = _labels_kw(src.module)
    t0 = time.perf_counter()
    src.say(f"calibrating {src.name} on {len(paths)} image(s): an int8 graph is quantized on them and each "
            "reduced precision is compared with fp32 (once; kept in the cache)")
    int8 = _int8_graph(src, inputs, digest)
    if int8 is not None:
        src.graphs = {**src.graphs, "int8.onnx": int8}
    reference = _label_maps(src.module, inputs, kw)
    machine, agreement, failed = this_machine(), {}, {}
    for backend in BACKENDS.values():
        if backend.missing():
            continue
        for precision in backend.precisions:
            key = f"{backend.name}-{precision}"
            if key in EXACT or backend.unsupported(precision, machine, src) or ("bf16" in precision and not machine.bf16):
                continue
            try:
                model = backend.prepare(src, precision, threads)
                maps = _label_maps(model, inputs, kw)
            except (BackendError, ImportError, RuntimeError, ValueError, OSError) as e:
                failed[key] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                continue
            same = sum(int((a == b).sum()) for a, b in zip(maps, reference))
            agreement[key] = round(same / sum(r.numel() for r in reference), 6)
    entry = {"calibration": digest, "images": len(paths), "agreement": agreement, "failed": failed,
             "int8_onnx": str(int8) if int8 else None, "when": time.time(),
             "seconds": round(time.perf_counter() - t0, 1)}
    keep_entry(agreement_file(), _key(src), entry)
    src.agreement = agreement
    src.say(f"calibrated {src.name} in {entry['seconds']:.0f} s: " + ", ".join(
        f"{k} {100 * v:.2f}%" for k, v in agreement.items()) + f" of pixels as fp32 (>= {100 * AGREEMENT:.0f}% "
        "eligible)")
    return entry


def _int8_graph(src: Source, inputs, digest: str) -> Path | None:
    """The int8 ONNX graph quantized on these images (made once, kept with a digest), None without onnxruntime."""
    if BACKENDS["onnx"].missing():
        return None
    from .quantize import quantize_int8

    path = cache_root() / "int8" / f"{_key(src).replace(':', '-')}-{digest}.onnx"
    if digest_matches(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        quantize_int8(src.module, path, [x.numpy() for x in inputs])
        write_digest(path)
    except OSError:
        return None  # a cache that cannot be written: the int8 candidates are left out
    return path


def _key(src: Source) -> str:
    return f"{src.key}:{src.isr}" if src.isr else src.key


def agreement_file() -> Path:
    return cache_root() / "agreement.json"


def kept(src: Source) -> None:
    """Give `src` the agreement kept for its weights, and the int8 graph it was measured with (if the graph is
    still whole); nothing when none is kept."""
    try:
        entry = json.loads(agreement_file().read_text()).get(_key(src))
        agreement = dict(entry["agreement"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return
    int8 = entry.get("int8_onnx")
    if int8:
        path = Path(int8)
        if digest_matches(path):
            src.graphs = {**src.graphs, "int8.onnx": path}
        else:
            agreement.pop("onnx-int8", None)
    src.agreement = {k: float(v) for k, v in agreement.items() if isinstance(v, (int, float))}

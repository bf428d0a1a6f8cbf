"""The graph files backends run: those shipped beside the trained weights, and fp32 ONNX graphs exported once
into the cache for any other model.

Shipped graphs lie in `pretrained/graphs/` as NAME.fp32.onnx (dynamic shapes), NAME.int8.onnx (onnxruntime QDQ)
and NAME.int8.xml/.bin (NNCF), written by scripts/build_graphs.py with the calibration settings the CamVid records
in pretrained/precision.json were measured with. `graphs/manifest.json` holds, per model, the SHA-256 of the
weights file the graphs were made from and of every graph file: a graph is used only when both still match, so
new weights never run with old graphs, and a damaged file is never run.

Exported graphs are $ATTNSEG_CACHE/onnx/KEY.onnx (KEY: the weights, the ISR setting baked in, attnseg's and
torch's versions) with KEY.sha256 beside it, written last and checked on every read. The export takes 30-60 s
on 2 cores; it is said in one line before and after, never silent.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from functools import lru_cache
from pathlib import Path

from ..notes import Note
from ..pretrained import PRETRAINED, PRETRAINED_DIR

GRAPHS_DIR = PRETRAINED_DIR / "graphs"
MANIFEST = GRAPHS_DIR / "manifest.json"


class GraphNote(Note):
    """A shipped or cached graph was not used (damaged, made from other weights, cache not writable)."""


GRAPH_SUFFIXES = (".onnx", ".xml")  # an ONNX graph, an OpenVINO IR: attnseg knows a graph file by its suffix


def is_graph_file(source) -> bool:
    """Whether `source` names a graph file (run in a graph runtime) rather than a model name or checkpoint."""
    return str(source).endswith(GRAPH_SUFFIXES)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest() -> dict:
    try:
        return json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=None)
def shipped_graphs(name: str) -> dict[str, Path]:
    """kind -> file of the graphs shipped for the trained model `name` that match its weights and their digests
    (checked once per process; a mismatch is one note and the graph is not used)."""
    entry = manifest().get(name)
    weights = PRETRAINED_DIR / PRETRAINED.get(name, "")
    if not entry or name not in PRETRAINED or not weights.is_file():
        return {}
    if file_sha256(weights) != entry.get("weights_sha256"):
        warnings.warn(f"the graphs shipped for {name} were made from other weights; they are not used",
                      GraphNote, stacklevel=2)
        return {}
    out = {}
    for kind, files in entry.get("files", {}).items():
        paths = {f: GRAPHS_DIR / f for f in files}
        try:
            ok = all(file_sha256(p) == digest for p, digest in zip(paths.values(), files.values()))
        except OSError:
            ok = False
        if ok:
            out[kind] = GRAPHS_DIR / next(iter(files))
        else:
            warnings.warn(f"the shipped {kind} graph of {name} is damaged or missing (digest mismatch); not used",
                          GraphNote, stacklevel=2)
    return out


def cache_root() -> Path:
    """$ATTNSEG_CACHE (default ~/.cache/attnseg)."""
    return Path(os.environ.get("ATTNSEG_CACHE") or Path.home() / ".cache" / "attnseg")


def weights_key(model, *extra) -> str:
    """What a graph made from `model` depends on: its architecture, config, weights, metadata (a graph carries
    the working size, normalisation and class names: two models with the same weights and other metadata make
    different graphs), the ISR factors it runs with (baked into a graph), attnseg's version and `extra` (the
    converter's version)."""
    import torch

    from .. import __version__
    from ..isr import state

    meta = json.dumps(getattr(model, "meta", None), sort_keys=True, default=str)
    h = hashlib.sha256(repr((getattr(model, "variant", type(model).__name__), getattr(model, "config", None),
                             meta, state(model), __version__, *extra)).encode())
    for k, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(k.encode() + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def fp32_onnx(source) -> Path:
    """The fp32 ONNX graph of a `Source`: the file given, the shipped one (no ISR), else exported once into the
    cache (one line before and one after: the export takes 30-60 s)."""
    if source.module is None:
        return source.path
    if not source.isr and "fp32.onnx" in source.graphs:
        return source.graphs["fp32.onnx"]
    from ..io import atomic_write_bytes
    from .export import onnx_bytes

    path = _export_path(source)
    digest = path.with_suffix(".sha256")
    if path.is_file():
        if digest_matches(path):
            return path
        warnings.warn(f"cached graph {path} is damaged or incomplete; exporting again", GraphNote, stacklevel=2)
    source.say(f"exporting {source.name} to ONNX for the graph runtimes (once, 30-60 s on 2 cores; kept in "
               f"{path.parent})")
    t0 = time.perf_counter()
    data = onnx_bytes(source.module)
    try:
        digest.unlink(missing_ok=True)
        atomic_write_bytes(path, data)  # size-checked
        write_digest(path, digest)
    except OSError as e:
        cause = getattr(e, "cause", None) or e.strerror or e
        warnings.warn(f"could not write the graph cache in {path.parent} ({cause}{free_space(path.parent)}); the "
                      "graph is kept for this run only (set ATTNSEG_CACHE to a writable folder)", GraphNote,
                      stacklevel=2)
        path = atomic_write_bytes(_run_folder() / path.name, data)
    source.say(f"exported {source.name} in {time.perf_counter() - t0:.0f} s")
    return path


def free_space(folder: Path) -> str:
    """"; N MB free there" for a cache-write note (a failed write's own message may not say the disk is full)."""
    import shutil

    try:
        return f"; {shutil.disk_usage(folder).free / 2**20:.1f} MB free there"
    except OSError:
        return ""


_RUN_FOLDER: list[Path] = []


def _run_folder() -> Path:
    """A temp folder for graphs that could not be kept in the cache, made once per process and removed when it
    exits."""
    if not _RUN_FOLDER:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="attnseg_graphs_"))
        atexit.register(shutil.rmtree, folder, True)
        _RUN_FOLDER.append(folder)
    return _RUN_FOLDER[0]


def keep_entry(path: Path, key: str, entry: dict, limit: int = 256) -> None:
    """Add `entry` under `key` to the JSON object in `path` (a cache file: choices, agreement), written whole to
    a temp file and renamed, never half-written; past `limit` entries the oldest ("when") go. A file that does
    not parse is started afresh; one that cannot be written is skipped (the next run measures again)."""
    from ..io import atomic_write_text

    try:
        data = json.loads(path.read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[key] = entry
    if len(data) > limit:
        data = dict(sorted(data.items(), key=lambda kv: kv[1].get("when", 0) if isinstance(kv[1], dict) else 0)[-limit:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1))
    except OSError:
        pass


def _export_path(source) -> Path:
    import torch

    return cache_root() / "onnx" / f"{weights_key(source.module, torch.__version__)}.onnx"


def fp32_onnx_ready(source) -> bool:
    """Whether `fp32_onnx` has the graph without exporting (a file given, shipped, or kept in the cache)."""
    if source.module is None or (not source.isr and "fp32.onnx" in source.graphs):
        return True
    path = _export_path(source)
    return path.is_file() and path.with_suffix(".sha256").is_file()


def digest_matches(path: Path) -> bool:
    """Whether a cache file is whole: it exists and matches the SHA-256 written beside it (PATH.sha256)."""
    try:
        return path.is_file() and path.with_suffix(".sha256").read_text().strip() == file_sha256(path)
    except OSError:
        return False


def write_digest(path: Path, digest: Path | None = None) -> None:
    """Write PATH's SHA-256 beside it (PATH.sha256, or `digest`), last, so a half-written entry has none."""
    from ..io import atomic_write_text

    atomic_write_text(digest or path.with_suffix(".sha256"), file_sha256(path) + "\n")

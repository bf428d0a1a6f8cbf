"""OpenVINO: a model converted through our ONNX export (cached per weights: the export takes ~30 s once), or an
ONNX graph `attnseg export` wrote, compiled for the CPU with an inference precision of fp32 or bf16.

On CPUs with AVX512-BF16 or AMX the bf16 hint runs matrix products and convolutions in bf16 (accumulating in
fp32) and fuses the element-wise ops around them; the shipped CamVid models then run 2.2-2.5x faster than our
fp32 onnxruntime graph with a CamVid mIoU within 0.3 points (results/precision). Images of any size run: the
graph keeps batch, height and width dynamic (and LSeg's number of labels). Each calling thread gets its own
infer request, so the video pipeline's workers can share one compiled model.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..export import graph_info
from ..graphs import cache_root, file_sha256, fp32_onnx, fp32_onnx_ready, free_space, weights_key
from .base import Backend, BackendError, GraphModel, Source, check_graph_io, read_onnx
from ...io import first_line
from ...notes import Note
from ...models.layers import converting_for

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
MAX_SHAPES = 16  # distinct input shapes a compiled graph serves before it is compiled afresh (bounded memory)
# Inputs with both sides under this run on a graph compiled for their shape alone (at most MAX_SHAPES kept): in the
# dynamic graph, one run whose attention has a single key leaves the CPU plugin computing wrong results for every
# later, larger input (measured on OpenVINO 2026.4, a softmax over one key followed by its matmul: EDAFormer after
# a 32x32 input, or 64x64 under ISR 2, off by up to 164 at 360x480; SegFormer after 32x32, by 0.002).
SMALL_SIDE = 256


def require_openvino():
    try:
        import openvino as ov
    except ImportError as e:
        raise ImportError("the openvino backend needs OpenVINO: pip install 'attnseg[openvino]'") from e
    return ov


class OpenVinoModel(GraphModel):
    backend = "openvino"

    def __init__(self, source, precision: str = "fp32", threads: int | None = None, streams: int = 1,
                 profile: bool = False, max_shapes: int = MAX_SHAPES, on_convert=None):
        """source: a PyTorch model from attnseg (converted here), or the path of an .onnx graph or OpenVINO IR
        (.xml). precision: fp32 or bf16 (the CPU plugin's inference precision hint). streams > 1 splits the
        threads into that many streams, for callers that run several requests at once (the video pipeline).
        profile: the plugin's per-operation performance counters on (benchmarks/ov_profile.py). max_shapes: distinct
        input shapes served before the graph is compiled afresh (see `_count_shape`). on_convert(folder): called
        before a PyTorch model is converted (not found in the conversion cache). An int8 IR
        (`attnseg export --format openvino --quantize int8`) reports precision int8; `precision` then rules
        the operations NNCF left in floating point."""
        ov = require_openvino()
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        core = ov.Core()
        if isinstance(source, torch.nn.Module):
            graph, info = _cached_graph(ov, core, source, on_convert), graph_info(source)
        else:
            graph = _read_graph(core, Path(source))
            info = _graph_info(Path(source), graph)
            if (info.get("quantization") or {}).get("precision") == "int8":
                self.precision = "int8"  # weights and activations int8 where NNCF put them; the hint rules the rest
        names = [i.get_any_name() for i in graph.inputs]
        shape = {i.get_any_name(): [d.get_length() if d.is_static else None for d in i.get_partial_shape()]
                 for i in graph.inputs}
        images = shape.get("images", next(iter(shape.values()), None))  # an IR may name its input otherwise
        out = list(graph.outputs[0].get_partial_shape()) if graph.outputs else None
        check_graph_io(source if not isinstance(source, torch.nn.Module) else "the converted model", names, images,
                       out)
        self._setup(info, names, images, out[1].get_length() if out[1].is_static else None)
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision],
                  "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT"}
        if streams > 1:
            config["NUM_STREAMS"] = int(streams)
        if profile:
            config["PERF_COUNT"] = True
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._core, self._graph, self._config = core, graph, config
        self.max_shapes = max_shapes
        self._shapes: set = set()
        self._requests: dict[int, object] = {}  # one infer request per calling thread
        self._small: dict[tuple, object] = {}  # input shapes -> graph compiled for them (small inputs, _run_small)
        self._running = 0  # infer calls in flight
        self._state = threading.Condition()
        self.compiled = core.compile_model(graph, "CPU", config)
        self.recompiled = 0  # times the graph was compiled afresh (see _count_shape)

    def _run(self, feeds: dict) -> np.ndarray:
        shape = tuple(feeds["images"].shape)
        if max(shape[-2:]) < SMALL_SIDE:
            return self._run_small(shape, feeds)
        with self._state:
            if shape not in self._shapes:
                self._count_shape(shape)
            req = self._requests.get(threading.get_ident())
            if req is None:
                req = self._requests[threading.get_ident()] = self.compiled.create_infer_request()
            self._running += 1
        try:
            req.infer(feeds)
            return req.get_output_tensor(0).data.copy()
        finally:
            with self._state:
                self._running -= 1
                self._state.notify_all()

    def _run_small(self, shape: tuple, feeds: dict) -> np.ndarray:
        """A small input on a graph compiled for its shape (see SMALL_SIDE), never on the dynamic one."""
        key = tuple(tuple(v.shape) for v in feeds.values())  # LSeg: the number of labels too
        with self._state:
            compiled = self._small.pop(key, None)
            if compiled is None:
                graph = self._graph.clone()
                try:
                    graph.reshape({graph.inputs[0]: ov_shape(shape), **{
                        i: ov_shape(feeds[i.get_any_name()].shape) for i in graph.inputs[1:]}})
                    compiled = self._core.compile_model(graph, "CPU", self._config)
                except RuntimeError as e:
                    raise ValueError(f"an input of {shape[-2]}x{shape[-1]} is too small for this graph in OpenVINO "
                                     f"({first_line(e)[:120]}); use a larger --size, or --backend onnx or eager") \
                        from None
            self._small[key] = compiled  # most recently used last; the oldest goes past max_shapes
            while len(self._small) > self.max_shapes:
                self._small.pop(next(iter(self._small)))
        req = compiled.create_infer_request()
        req.infer(feeds)
        return req.get_output_tensor(0).data.copy()

    def _count_shape(self, shape: tuple) -> None:
        """The CPU plugin keeps memory for every input shape a dynamic graph has run (compiled kernels and
        buffers, ~4-17 MB each, not all of it under its runtime-cache capacity): past `max_shapes` distinct
        shapes the graph is compiled afresh (about a second), so memory stays bounded whatever sizes arrive.
        Called holding `_state`; waits for the calls in flight, then drops every infer request before the
        graph they belong to."""
        if len(self._shapes) >= self.max_shapes:
            while self._running:
                self._state.wait()
            self._requests.clear()
            self.compiled = None
            gc.collect()  # the old graph's memory goes before the new one is built
            self.compiled = self._core.compile_model(self._graph, "CPU", self._config)
            self.recompiled += 1
            self._shapes.clear()
        self._shapes.add(shape)


def ov_shape(shape) -> object:
    import openvino

    return openvino.PartialShape([int(d) for d in shape])


def cache_dir() -> Path:
    """Where converted graphs are kept: $ATTNSEG_CACHE/openvino (default ~/.cache/attnseg/openvino)."""
    return cache_root() / "openvino"


class CacheNote(Note):
    """The conversion cache could not be used (damaged entry, unwritable folder); the run goes on without it."""


def _cached_graph(ov, core, model: torch.nn.Module, on_convert=None):
    """The converted graph of `model`, from the cache when this model was converted before (the LSeg export
    takes ~30 s, a direct conversion ~4 s; reading the cached IR takes well under a second).

    An entry is NAME.xml, NAME.bin and NAME.sha256 (the SHA-256 of both, written last): it is used only when the
    digests match, so a damaged or half-written entry is converted again (said in one note), never run. A cache
    that cannot be written (a full disk, a read-only folder) is said in one note; the converted graph still runs."""
    xml = cache_dir() / f"{weights_key(model, __import__('openvino').__version__)}.xml"
    if xml.is_file():
        problem = _check_entry(xml)
        if problem is None:
            try:
                return core.read_model(str(xml))
            except RuntimeError as e:
                problem = f"OpenVINO cannot read it ({first_line(e)})"
        warnings.warn(f"conversion cache entry {xml} is {problem}; converting the model again", CacheNote,
                      stacklevel=3)
    if on_convert:
        on_convert(xml.parent)
    graph = convert(ov, model)
    _store(ov, graph, xml)
    return graph


def _digests(xml: Path) -> dict:
    return {part.suffix[1:]: file_sha256(part) for part in (xml, xml.with_suffix(".bin"))}


def _check_entry(xml: Path) -> str | None:
    """None when the entry's files match the digests written beside them, else what is wrong."""
    try:
        recorded = json.loads(xml.with_suffix(".sha256").read_text())
    except (OSError, ValueError):
        return "incomplete (no digest)"
    try:
        return None if _digests(xml) == recorded else "damaged (its digest does not match)"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def _store(ov, graph, xml: Path) -> None:
    """Write the entry: the IR to temp names, its digests, then renames (the digest file last)."""
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.xml")
    parts = [(tmp, xml), (tmp.with_suffix(".bin"), xml.with_suffix(".bin")),
             (tmp.with_suffix(".sha256"), xml.with_suffix(".sha256"))]
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.with_suffix(".sha256").unlink(missing_ok=True)  # the old entry is invalid from here on
        ov.save_model(graph, str(tmp), compress_to_fp16=False)
        digests = _digests(tmp)
        with open(parts[2][0], "w") as f:
            f.write(json.dumps(digests))
            f.flush()
            os.fsync(f.fileno())
        for src, dst in parts:
            os.replace(src, dst)
    except (OSError, RuntimeError) as e:  # OpenVINO reports a failed write (e.g. a full disk) as RuntimeError
        cause = first_line(e)
        if not isinstance(e, OSError):  # its message ("iostream error") does not say why: the free space does
            cause += free_space(xml.parent)
        warnings.warn(f"could not write the conversion cache in {xml.parent} ({cause}); the converted "
                      "model runs, and the next run converts it again (set ATTNSEG_CACHE to a writable folder)",
                      CacheNote, stacklevel=4)
    finally:
        for src, _ in parts:
            with contextlib.suppress(OSError):
                src.unlink(missing_ok=True)


def convert(ov, model: torch.nn.Module):
    """openvino.convert_model with dynamic batch, height, width (and number of labels for LSeg)."""
    from ...models.lseg import is_language_driven

    model = model.eval()
    x = torch.randn(1, 3, 64, 96)
    with converting_for("openvino"), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: expected
        return _trace(ov, model, x, is_language_driven(model))


def _trace(ov, model, x, lseg: bool):
    """Through our ONNX export (symbolic shapes, TF-"same" padding folded): 0-14% faster in OpenVINO than a
    direct trace (measured: default model 42.7 vs 43.4 ms, SANet 25.3 vs 28.6, SegFormer-B0 59.2 vs 67.5 at
    their working sizes, bf16) and the only way for LSeg, whose traced upsampling sizes become constants.
    Without the onnx extra, openvino.convert_model traces the model directly (exact too)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        if lseg:
            raise ImportError("LSeg in OpenVINO goes through the ONNX export: pip install 'attnseg[openvino]'") from None
        return ov.convert_model(model, example_input=x, input=[("images", ov.PartialShape([-1, 3, -1, -1]))])
    import tempfile

    from .. import export

    with tempfile.TemporaryDirectory(prefix="attnseg_ov_") as tmp:
        return ov.Core().read_model(str(export.export_onnx(model, Path(tmp) / "model.onnx")))


def _read_graph(core, path: Path):
    """OpenVINO's model of an IR or ONNX file, or BackendError in one line. A file that does not look like its
    kind (an .xml without <net>, an .onnx that does not open with its ir_version field) is checked before
    OpenVINO sees it, which would try every frontend on it and print their parse errors."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if path.suffix == ".xml" and b"<net" not in head:
        raise BackendError(f"{path.name} is not an OpenVINO IR (an XML file whose root is <net>): write one with "
                           "`attnseg export --format openvino`")
    if path.suffix == ".onnx" and head[:1] != b"\x08" and not read_onnx(path).graph.node:
        raise BackendError(f"{path.name} holds no ONNX graph: write one with `attnseg export`")
    try:
        return core.read_model(str(path))
    except RuntimeError as e:  # OpenVINO's message: "Exception from <source file>:" lines, then the reason
        lines = [x.strip() for x in str(e).splitlines() if x.strip() and not x.startswith("Exception from")]
        reason = (lines[-1] if lines else first_line(e)).split(" Available frontends")[0]
        raise BackendError(f"OpenVINO cannot read {path.name}: {reason}") from None


def _graph_info(path: Path, graph=None) -> dict:
    """The attnseg metadata of a graph: an IR's runtime info (`attnseg`, written by the int8 export), else that of
    the .onnx graph (or of the .onnx beside an IR)."""
    if graph is not None and graph.has_rt_info(["attnseg"]):
        try:
            return json.loads(graph.get_rt_info(["attnseg"]).astype(str))
        except ValueError:
            pass
    onnx_path = path if path.suffix == ".onnx" else path.with_suffix(".onnx")
    if not onnx_path.is_file():
        return {}
    try:
        proto = read_onnx(onnx_path)
        meta = {p.key: p.value for p in proto.metadata_props}.get("attnseg")
        return json.loads(meta) if meta else {}
    except Exception:  # a damaged or foreign .onnx: the graph runs without attnseg's metadata
        return {}


class OpenVinoBackend(Backend):
    """fp32 and bf16 (the CPU plugin's inference precision) from the shipped fp32 IR or ONNX graph, or a converted
    model;
    int8 and int8-bf16 from an NNCF int8 IR (shipped, or a file given), the rest of the graph in fp32 or bf16."""

    name = "openvino"
    precisions = ("fp32", "bf16", "int8", "int8-bf16")
    library = "openvino"
    install_hint = "the openvino backend needs OpenVINO: pip install 'attnseg[openvino]'"

    def unsupported(self, precision, machine, source):
        why = super().unsupported(precision, machine, source)
        if why is None and precision.startswith("int8") and _int8_ir(source) is None:
            why = ("no int8 IR: one is shipped with the trained models, or made with `attnseg export --format "
                   "openvino --quantize int8`")
        return why

    def ready(self, source, precision):
        if precision.startswith("int8") or source.module is None or (not source.isr and "fp32.xml" in source.graphs):
            return True
        if not _language_driven(source.module):
            return fp32_onnx_ready(source)
        import openvino

        return (cache_dir() / f"{weights_key(source.module, openvino.__version__)}.sha256").is_file()

    def prepare(self, source: Source, precision: str, threads=None, fixed=None, callers=1):
        hint = "bf16" if precision.endswith("bf16") else "fp32"
        if precision.startswith("int8"):
            graph = _int8_ir(source)
            if graph is None:
                raise BackendError(self.unsupported(precision, None, source) or "no int8 IR")
        elif source.module is None:
            graph = source.path
        elif not source.isr and "fp32.xml" in source.graphs:
            graph = source.graphs["fp32.xml"]  # shipped for LSeg, whose conversion takes ~35 s
        elif not _language_driven(source.module):
            # the fp32 ONNX graph onnxruntime runs (shipped, or exported once into the cache): OpenVINO reads it in
            # well under a second, and a model is exported once for both runtimes, not once each
            graph = fp32_onnx(source)
        else:
            graph = source.module
        model = OpenVinoModel(graph, hint, threads, streams=callers, on_convert=lambda folder: source.say(
            f"converting {source.name} for OpenVINO (once, 30-60 s on 2 cores; kept in {folder})"))
        if precision.startswith("int8"):
            model.precision = precision
        return model


def _language_driven(model) -> bool:
    """LSeg converts with its label product as a matmul (`converting_for("openvino")`): the ONNX graph made for
    onnxruntime holds it as a convolution whose weights are an input, which the CPU plugin cannot compile."""
    from ...models.lseg import is_language_driven

    return is_language_driven(model)


def _int8_ir(source: Source):
    if source.module is None and source.path is not None and source.path.suffix == ".xml":
        return source.path
    return source.graphs.get("int8.xml") if not source.isr else None

"""onnxruntime: graphs `attnseg export` writes (fp32, or int8 QDQ from `deploy.quantize`), run on the CPU.

`OnnxModel` runs a file; `OnnxBackend` prepares one from a `Source`: the fp32 graph shipped with trained weights,
else one exported once into the cache (`deploy.graphs`); int8 needs an int8 graph (shipped, or a file given),
because its calibration needs images the model was trained on. `fixed=(h, w)` pins the graph's named
height and width (`add_free_dimension_override_by_name`), so onnxruntime plans every shape once at load
instead of at each run; images are then resized to that size (`Segmenter.working_size`).
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import numpy as np

from ...io import first_line
from .base import Backend, BackendError, GraphModel, Source, check_graph_io, read_onnx


class OnnxModel(GraphModel):
    """A graph `attnseg export` wrote, run in onnxruntime."""

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = True,
                 fixed: tuple[int, int] | None = None):
        """threads: onnxruntime's intra-op threads (default: its own choice). spinning=False makes idle pool
        threads sleep instead of spin after each run: slower for back-to-back runs, faster when other
        threads need the cores between runs (the video pipeline's decoder and encoder). fixed: (height, width)
        the session pins the graph's dynamic batch, height and width to (1, height, width) and runs the
        images of that size (one at a time); images of other sizes run in a dynamic session made when first
        needed."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("the onnx backend needs onnxruntime: pip install 'attnseg[onnx]'") from e
        self._fixed, self._fixed_session = fixed, None
        so = _options(ort, threads, spinning)
        if fixed:
            for dim, value in (("batch", 1), ("height", fixed[0]), ("width", fixed[1])):
                so.add_free_dimension_override_by_name(dim, int(value))
        try:
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types: not a graph it can load
            raise BackendError(f"onnxruntime cannot load {Path(path).name}: {_reason(e)}; write a graph with "
                               "`attnseg export`") from None
        custom = session.get_modelmeta().custom_metadata_map
        inputs, outputs = session.get_inputs(), session.get_outputs()
        images = next((list(i.shape) for i in inputs if i.name == "images"), None)
        check_graph_io(path, [i.name for i in inputs], images, list(outputs[0].shape) if outputs else None)
        self._setup(json.loads(custom["attnseg"]) if custom.get("attnseg") else {}, [i.name for i in inputs],
                    images, outputs[0].shape[1])
        if "attnseg_quantization" in custom:
            self.precision = "int8"  # a QDQ graph from deploy.quantize
        if fixed:  # a pinned dynamic graph still takes any size: the others run in the dynamic session
            self.fixed_size = self.fixed_batch = None
            self._fixed_session, self.session = session, None
            self._dynamic = lambda: ort.InferenceSession(str(path), _options(ort, threads, spinning),
                                                         providers=["CPUExecutionProvider"])
            self._lock = threading.Lock()
        else:
            self.session = session

    def _run(self, feeds: dict) -> np.ndarray:
        x = feeds["images"]
        if self._fixed_session is not None and tuple(x.shape[2:]) == tuple(self._fixed):
            return np.concatenate([self._fixed_session.run(None, {**feeds, "images": x[i:i + 1]})[0]
                                   for i in range(x.shape[0])])
        if self.session is None:  # pinned at one size: images of another size need the dynamic session
            with self._lock:
                if self.session is None:
                    self.session = self._dynamic()
        return self.session.run(None, feeds)[0]


def _reason(e: Exception) -> str:
    """onnxruntime's message without its code prefix and the path it repeats."""
    line = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(e))
    return line.rpartition(" failed:")[2].strip().rstrip(".") or type(e).__name__


def call_threads(threads: int | None, callers: int) -> int | None:
    """onnxruntime's threads for each of `callers` calls at once: the model's threads (None: PyTorch's, one per
    core by default) shared among them, at least one each; their pools do not spin, so the calls overlap each
    other and the work around them (a video's decoding and encoding). One caller: `threads` as given."""
    if callers <= 1:
        return threads
    import torch

    return max(1, (threads or torch.get_num_threads()) // callers)


def _options(ort, threads, spinning):
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxBackend(Backend):
    name = "onnx"
    precisions = ("fp32", "int8")
    library = "onnxruntime"
    install_hint = "the onnx backend needs onnxruntime: pip install 'attnseg[onnx]'"

    def unsupported(self, precision, machine, source):
        why = super().unsupported(precision, machine, source)
        if why is None and source.module is None and source.path is not None and source.path.suffix != ".onnx":
            why = f"{source.path.name}: an .xml graph is an OpenVINO IR, which runs with --backend openvino (or auto)"
        elif why is None and precision == "int8" and not _int8_graph(source):
            why = "no int8 graph: one is shipped with the trained models, or made with `attnseg export --quantize int8`"
        return why

    def ready(self, source, precision):
        from ..graphs import fp32_onnx_ready

        return precision == "int8" or fp32_onnx_ready(source)

    def prepare(self, source: Source, precision: str, threads=None, fixed=None, callers=1):
        from ..graphs import fp32_onnx

        path = _int8_graph(source) if precision == "int8" else fp32_onnx(source)
        if path is None:
            raise BackendError(self.unsupported(precision, None, source) or "no graph")
        model = OnnxModel(path, call_threads(threads, callers), spinning=callers <= 1, fixed=fixed)
        if precision == "int8" and model.precision != "int8":
            raise BackendError(f"{path} is not an int8 graph")
        return model


def _int8_graph(source: Source):
    if source.path is not None and source.path.suffix == ".onnx" and source.module is None:
        return source.path if _is_int8(source.path) else None
    return source.graphs.get("int8.onnx") if not source.isr else None


def _is_int8(path) -> bool:
    return "attnseg_quantization" in {p.key for p in read_onnx(path).metadata_props}

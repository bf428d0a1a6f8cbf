"""OpenVINO: a model converted through our ONNX export (cached per weights: the export takes ~30 s once), or an
ONNX graph `attnseg export` wrote, compiled for the CPU with an inference precision of fp32 or bf16.

On CPUs with AVX512-BF16 or AMX the bf16 hint runs matrix products and convolutions in bf16 (accumulating in
fp32) and fuses the element-wise ops around them; the shipped CamVid models then run 2.2-2.5x faster than our
fp32 onnxruntime graph with a CamVid mIoU within 0.3 points (results/precision). Images of any size run: the
graph keeps batch, height and width dynamic (and LSeg's number of labels). Each calling thread gets its own
infer request, so the video pipeline's workers can share one compiled model.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..export import GraphModel, graph_info
from ...models.layers import converting_for

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino():
    try:
        import openvino as ov
    except ImportError as e:
        raise ImportError("the openvino backend needs OpenVINO: pip install 'attnseg[openvino]'") from e
    return ov


class OpenVinoModel(GraphModel):
    backend = "openvino"

    def __init__(self, source, precision: str = "fp32", threads: int | None = None, streams: int = 1,
                 profile: bool = False):
        """source: a PyTorch model from attnseg (converted here), or the path of an .onnx graph or OpenVINO IR
        (.xml). precision: fp32 or bf16 (the CPU plugin's inference precision hint). streams > 1 splits the
        threads into that many streams, for callers that run several requests at once (the video pipeline).
        profile: the plugin's per-operation performance counters on (benchmarks/ov_profile.py). An int8 IR
        (`attnseg export --format openvino --quantize int8`) reports precision int8; `precision` then rules
        the operations NNCF left in floating point."""
        ov = require_openvino()
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        core = ov.Core()
        if isinstance(source, torch.nn.Module):
            graph, info = _cached_graph(ov, core, source), graph_info(source)
        else:
            graph = core.read_model(str(source))
            info = _graph_info(Path(source), graph)
            if (info.get("quantization") or {}).get("precision") == "int8":
                self.precision = "int8"  # weights and activations int8 where NNCF put them; the hint rules the rest
        names = [i.get_any_name() for i in graph.inputs]
        dims = [d.get_length() if d.is_static else None for d in graph.inputs[0].get_partial_shape()]
        out = graph.outputs[0].get_partial_shape()
        self._setup(info, names, dims, out[1].get_length() if out[1].is_static else None)
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision],
                  "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT"}
        if streams > 1:
            config["NUM_STREAMS"] = int(streams)
        if profile:
            config["PERF_COUNT"] = True
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(graph, "CPU", config)
        self._local = threading.local()

    def _run(self, feeds: dict) -> np.ndarray:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        req.infer(feeds)
        return req.get_output_tensor(0).data.copy()


def cache_dir() -> Path:
    """Where converted graphs are kept: $ATTNSEG_CACHE/openvino (default ~/.cache/attnseg/openvino)."""
    root = os.environ.get("ATTNSEG_CACHE") or Path.home() / ".cache" / "attnseg"
    return Path(root) / "openvino"


def _fingerprint(model: torch.nn.Module) -> str:
    """The weights, architecture and attnseg/OpenVINO versions a converted graph depends on."""
    import openvino

    from ... import __version__

    h = hashlib.sha256(repr((getattr(model, "variant", type(model).__name__), getattr(model, "config", None),
                             __version__, openvino.__version__)).encode())
    for k, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(k.encode() + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _cached_graph(ov, core, model: torch.nn.Module):
    """The converted graph of `model`, from the cache when this model was converted before (the LSeg export
    takes ~30 s, a direct conversion ~4 s; reading the cached IR takes well under a second)."""
    xml = cache_dir() / f"{_fingerprint(model)}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        try:
            return core.read_model(str(xml))
        except RuntimeError:
            pass  # a damaged cache entry: convert again
    graph = convert(ov, model)
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.xml")
        ov.save_model(graph, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    except OSError:
        pass  # a read-only home: no cache, the conversion still ran
    return graph


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
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}.get("attnseg")
    return json.loads(meta) if meta else {}

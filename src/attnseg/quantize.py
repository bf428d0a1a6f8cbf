"""int8 ONNX models: onnxruntime static quantization (QDQ, per-channel int8 weights, uint8 activations),
calibrated on real images put through the model's own preprocessing.

    attnseg export --model M --format onnx --quantize int8 --calibrate camvid:../shared/data/camvid:train \\
        --calib-images 64 --out m.int8.onnx

Steps: export the fp32 graph (dynamic shapes), `quant_pre_process` (shape inference and graph optimisation
first: quantizing an unoptimised graph leaves most of the speed on the table), then `quantize_static` with
a calibration reader over the images. `--exclude-ops` keeps operator types in fp32 (e.g. Softmax,
Resize); the choices are written into the graph's metadata ("attnseg_quantization"), so a file says how it
was made. OnnxModel runs the result like any other graph.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def calibration_inputs(model, dataset, n: int, seed: int = 0) -> list[np.ndarray]:
    """n images from `dataset` (evenly spaced), preprocessed exactly as `attnseg predict` does."""
    from .segmenter import Segmenter

    seg = Segmenter(model)
    idx = np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int)
    out = []
    for i in dict.fromkeys(idx.tolist()):
        img = dataset[i]["image"].permute(1, 2, 0).numpy()
        x, _ = seg.preprocess(np.ascontiguousarray(img))
        out.append(x.numpy().astype(np.float32))
    return out


def quantize_int8(model, out_path, calib: list[np.ndarray], method: str = "minmax", exclude_ops=(),
                  per_channel: bool = True) -> Path:
    """Export `model` and write an int8 QDQ graph calibrated on `calib` (normalised (1, 3, h, w) arrays)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    from .export import export_onnx
    from .io import atomic_write
    from .models.lseg import is_language_driven

    if is_language_driven(model):
        raise ValueError("int8 export of LSeg graphs (label embeddings as a second input) is not supported yet")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {', '.join(methods)}, got {method!r}")
    if not calib:
        raise ValueError("no calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"images": x} for x in calib)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="attnseg_int8_") as tmp:
        fp32, pre, q = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, fp32, dynamic=True, example_size=tuple(calib[0].shape[-2:]))
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # symbolic inference fails on these graphs
        graph_ops = {n.op_type for n in onnx.load(str(pre)).graph.node}
        ops = sorted(graph_ops & {"Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "Resize", "Concat",
                                  "Softmax", "AveragePool", "MaxPool", "GlobalAveragePool", "Transpose",
                                  "Reshape"} - set(exclude_ops))
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method], op_types_to_quantize=ops,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        m = onnx.load(str(q))
        info = {"method": method, "per_channel": per_channel, "weights": "int8", "activations": "uint8",
                "format": "QDQ", "quantized_ops": ops, "fp32_ops": sorted(set(exclude_ops)),
                "calibration_images": len(calib)}
        m.metadata_props.append(onnx.StringStringEntryProto(key="attnseg_quantization", value=json.dumps(info)))
        src = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
        if "attnseg" in src and not any(p.key == "attnseg" for p in m.metadata_props):
            m.metadata_props.append(onnx.StringStringEntryProto(key="attnseg", value=src["attnseg"]))
        return atomic_write(out_path, lambda t: onnx.save(m, t))

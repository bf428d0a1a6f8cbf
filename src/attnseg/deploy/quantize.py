"""int8 ONNX models: onnxruntime static quantization (QDQ, per-channel int8 weights, uint8 activations),
calibrated on real images put through the model's own preprocessing.

    attnseg export --model M --format onnx --quantize int8 --calibrate camvid:data/camvid:train \\
        --calib-images 64 --out m.int8.onnx

Steps: export the fp32 graph (dynamic shapes), `quant_pre_process` (shape inference and graph optimisation
first: quantizing an unoptimised graph leaves most of the speed on the table), then `quantize_static` with
a calibration reader over the images. `--exclude-ops` keeps operator types in fp32 (e.g. Softmax,
Resize); the choices are written into the graph's metadata ("attnseg_quantization"), so a file says how it
was made. OnnxModel runs the result like any other graph.

Which operations stay fp32 was decided by measuring (docs/deployment.md, "Precision"):
* products of two run-time tensors (attention's q k^T and attn v, LSeg's pixel-label similarity, the
  matrix upsampling of exported decoders) always stay fp32: quantizing them puts the softmax between a
  DequantizeLinear and a QuantizeLinear, which onnxruntime fuses into QLinearSoftmax, 5x slower than the
  fp32 Softmax it replaces (SegFormer-B0 at 512x512: 33 vs 6 ms), and their operands have no fixed range;
* arithmetic on sizes and on weights alone (`shape_arithmetic`: nothing but a Shape op connects it to an
  input, e.g. the interpolation matrices an exported resize builds from the feature map's size) always stays
  fp32: those values are not activations, and with them quantized the CamVid-trained SegFormer-B0's argmax
  agreed with fp32 on 57.7% of the test pixels (mIoU 37.7 -> 22.6); in fp32, 99.5%;
* transformer models (SegFormer, EDAFormer) quantize only Conv/MatMul/Gemm/Add/Mul (`default_fp32_ops`):
  SegFormer-B0 at 512x512 runs 1.14x its fp32 graph's speed with these, 1.11x with every op type but
  Softmax quantized (same agreement); with Softmax quantized too it ran 0.79x (QLinearSoftmax, above);
* convolutional models (SANet, LSeg on EfficientNet) quantize every supported op type, so activations stay
  int8 from one convolution to the next (QLinearAdd/Concat/AveragePool): the shipped SANet 1.4-1.5x (360x480)
  and 1.74-2.02x (512x512) its fp32 graph's speed over the runs so far (benchmarks/precision.py);
* the convolution that reads the image (the stem: 3 input channels) stays fp32, so the image is never
  quantized: int8 dot products over 3 channels gain nothing, and a quantized image cost a QuantizeLinear,
  a Transpose to NHWC and two DequantizeLinear (one feeding the graph's Shape ops) of the full-size input;
  the shipped SANet at 512x512 ran 29.1 -> 27.9 ms per image with its stem in fp32;
* LSeg's label-dependent tail (everything downstream of the `text_embeddings` input: the pixel-label
  similarity, the spatial blocks on the logits, the upsampling) stays fp32: its ranges depend on the label
  set, which changes at run time, and with it quantized the shipped LSeg lost 0.71 mIoU (0.70 with
  percentile calibration, 0.71 with Mul in fp32).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def spaced_indices(length: int, n: int | None) -> list[int]:
    """Up to n distinct indices evenly spaced over range(length) (all of them when n is None)."""
    if n is None:
        return list(range(length))
    return list(dict.fromkeys(np.linspace(0, length - 1, num=min(n, length)).round().astype(int).tolist()))


def calibration_inputs(model, dataset, n: int, seed: int = 0) -> list[np.ndarray]:
    """n images from `dataset` (evenly spaced), preprocessed exactly as `attnseg predict` does."""
    from ..inference.segmenter import Segmenter

    seg = Segmenter(model)
    out = []
    for i in spaced_indices(len(dataset), n):
        img = dataset[i]["image"].permute(1, 2, 0).numpy()
        x, _ = seg.preprocess(np.ascontiguousarray(img))
        out.append(x.numpy().astype(np.float32))
    return out


QUANTIZABLE = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "Resize", "Concat", "Softmax", "AveragePool",
               "MaxPool", "GlobalAveragePool", "Transpose", "Reshape")
def default_fp32_ops(model) -> list[str]:
    """The op types a model family keeps in fp32 (measured; see the module docstring and attnseg.families)."""
    from ..families import FAMILIES, family_name

    fam = FAMILIES.get(family_name(str(getattr(model, "variant", "") or "")))
    if fam is not None and fam.transformer:
        return sorted(set(QUANTIZABLE) - {"Conv", "MatMul", "Gemm", "Add", "Mul"})
    return []


def activation_products(graph) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes whose second operand is computed at run time (not a weight)."""
    consts = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return [n.name for n in graph.node
            if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] not in consts]


def image_convs(graph) -> list[str]:
    """Names of the Conv nodes that read a graph input directly (the stem: 3 input channels)."""
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def downstream_of(graph, *input_names: str, through_shape: bool = True) -> list[str]:
    """Names of the nodes that depend on the named graph inputs (LSeg: the label-dependent tail of
    `text_embeddings`); with through_shape=False a Shape op ends the dependence (its output is a size)."""
    reached, names = set(input_names), []
    for n in graph.node:  # ONNX graphs are topologically sorted
        if (through_shape or n.op_type != "Shape") and any(i in reached for i in n.input):
            reached.update(n.output)
            names.append(n.name)
    return names


def label_similarity(graph) -> list[str]:
    """LSeg's label similarity F = s * normalize(W h + b) . T^T: the nodes the label embeddings reach (their
    ranges change with every label set) and every node computed from the decoder features h that meet the
    labels, which includes the image embedding's norm |W h + b| (computed as h^T W^T W h + 2 (W^T b)^T h +
    |b|^2, a difference of large terms: int8 there cost a model trained with label noise 5.7 mIoU)."""
    tail = set(downstream_of(graph, "text_embeddings"))
    reached = {"text_embeddings"} | {o for n in graph.node if n.name in tail for o in n.output}
    computed = {o for n in graph.node for o in n.output}  # not a weight or a graph input
    sizes = shape_tensors(graph)  # sizes and weight arithmetic (Constant nodes included) are not features
    features = {i for n in graph.node if n.name in tail for i in n.input
                if i and i not in reached and i in computed and i not in sizes}
    return downstream_of(graph, "text_embeddings", *features)


def shape_tensors(graph) -> set[str]:
    """Outputs of the nodes that only compute sizes or weight arithmetic (see shape_arithmetic)."""
    sizes = set(shape_arithmetic(graph))
    return {o for n in graph.node if n.name in sizes for o in n.output}


def shape_arithmetic(graph) -> list[str]:
    """Names of the nodes whose values no graph input reaches except through a Shape op: arithmetic on sizes
    and on weights alone (the interpolation matrices an exported resize builds from the feature map's size,
    folded weight products). Their values are not activations; quantizing them breaks the upsampling."""
    values = set(downstream_of(graph, *(i.name for i in graph.input), through_shape=False))
    return [n.name for n in graph.node if n.name not in values]


def quantize_int8(model, out_path, calib: list[np.ndarray], method: str = "minmax", exclude_ops=None,
                  per_channel: bool = True) -> Path:
    """Export `model` and write an int8 QDQ graph calibrated on `calib` (normalised (1, 3, h, w) arrays)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    from .export import export_onnx
    from ..io import atomic_write
    from ..models.lseg import is_language_driven

    exclude_ops = default_fp32_ops(model) if exclude_ops is None else list(exclude_ops)
    extra = {}
    if is_language_driven(model):  # calibrate with the model's own label set (its trained class names)
        if not getattr(model, "default_labels", None):
            raise ValueError("int8 export of an LSeg model needs the labels to calibrate with (a model saved with "
                             "class names)")
        import torch

        with torch.no_grad():
            extra["text_embeddings"] = model.text_encoder.encode(model.default_labels).float().numpy()
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {', '.join(methods)}, got {method!r}")
    if not calib:
        raise ValueError("no calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"images": x, **extra} for x in calib)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="attnseg_int8_") as tmp:
        fp32, pre, q = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, fp32, dynamic=True, example_size=tuple(calib[0].shape[-2:]))
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # symbolic inference fails on these graphs
        pre_model = onnx.load(str(pre))
        for i, n in enumerate(pre_model.graph.node):  # nodes are excluded by name: every node needs one
            n.name = n.name or f"attnseg_{n.op_type}_{i}"
        onnx.save(pre_model, str(pre))
        graph_ops = {n.op_type for n in pre_model.graph.node}
        ops = sorted(graph_ops & set(QUANTIZABLE) - set(exclude_ops))
        products, stem = activation_products(pre_model.graph), image_convs(pre_model.graph)
        sizes = shape_arithmetic(pre_model.graph)
        # LSeg: everything the labels reach stays fp32; its ranges change with every label set, so calibrating
        # it on the trained names would not hold for others (and int8 logits cost 0.7 mIoU)
        tail = label_similarity(pre_model.graph) if extra else []
        fp32_nodes = sorted(set(products) | set(stem) | set(tail) | set(sizes))
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method], op_types_to_quantize=ops, nodes_to_exclude=fp32_nodes,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        m = onnx.load(str(q))
        info = {"method": method, "per_channel": per_channel, "weights": "int8", "activations": "uint8",
                "format": "QDQ", "quantized_ops": ops, "fp32_ops": sorted(set(exclude_ops)),
                "fp32_activation_products": len(products), "fp32_image_convs": len(stem),
                "fp32_label_tail": len(tail), "fp32_shape_arithmetic": len(sizes),
                "calibration_images": len(calib)}
        m.metadata_props.append(onnx.StringStringEntryProto(key="attnseg_quantization", value=json.dumps(info)))
        src = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
        if "attnseg" in src and not any(p.key == "attnseg" for p in m.metadata_props):
            m.metadata_props.append(onnx.StringStringEntryProto(key="attnseg", value=src["attnseg"]))
        return atomic_write(out_path, lambda t: onnx.save(m, t))

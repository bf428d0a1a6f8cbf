"""int8 OpenVINO graphs: NNCF post-training quantization of the converted model, calibrated on real images put
through the model's own preprocessing, saved as OpenVINO IR (`.xml` + `.bin`) that `--model m.xml` runs.

    attnseg export --model M --format openvino --quantize int8 --calibrate camvid:data/camvid:train \\
        --calib-images 32 --out m.int8.xml

NNCF quantizes weights per channel and activations per tensor (min/max over the calibration images). What
else is chosen was measured on CamVid validation (101 images at the working size, fp32 -> int8 mIoU):

* transformer families (SegFormer, EDAFormer: `registry.Family.transformer`) use NNCF's transformer model
  type, which keeps softmax, LayerNorm and GELU out of int8 and quantizes the matrix products around them:
  the CamVid-trained EDAFormer-T 33.22 -> 33.19 (the default type: 32.57);
* convolutional families use the mixed preset (asymmetric activations: ReLU6 and swish outputs are not
  centred) and keep the first convolution (it reads the image: 3 channels, nothing to gain) and the last (the
  classifier) in floating point: the default model 78.21 -> 78.21 (default preset, all convolutions: 77.60;
  mixed alone 77.83; the two convolutions alone 78.03);
* LSeg's label input is a run-time tensor whose range depends on the labels a user types, so every operation
  downstream of it stays in floating point (an ignored scope built from the graph), with the image stem; the
  image embedding before it is int8.
What was chosen is written into the IR's runtime info (`attnseg`), with the model's metadata, so a file says
how it was made and `OpenVinoModel` reports precision int8.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...io import atomic_write_bytes
from ...families import FAMILIES, family_name


def _model_type(model) -> str:
    fam = FAMILIES.get(family_name(str(getattr(model, "variant", "") or "")))
    return "transformer" if fam is not None and fam.transformer else "default"


def label_tail(graph) -> list[str]:
    """Names of the operations that depend on LSeg's `text_embeddings` input (ops after a ShapeOf excluded:
    their outputs are sizes)."""
    start = [p for p in graph.get_parameters() if p.get_friendly_name() == "text_embeddings"
             or "text_embeddings" in p.get_output_tensor(0).get_names()]
    if not start:
        return []
    seen, names, stack = set(), [], [start[0].output(0)]
    while stack:
        out = stack.pop()
        for inp in out.get_target_inputs():
            node = inp.get_node()
            name = node.get_friendly_name()
            if name in seen or node.get_type_name() in ("ShapeOf", "Result"):
                continue
            seen.add(name)
            names.append(name)
            stack.extend(node.outputs())
    return names


def quantize_openvino(model, out: str | os.PathLike, calib: list[np.ndarray], text: np.ndarray | None = None) -> Path:
    """Quantize `model` (an attnseg PyTorch model) with NNCF on the preprocessed images `calib` and write
    `out` (.xml, with its .bin beside it). `text`: LSeg's label embeddings used while calibrating (default: its
    default labels' embeddings)."""
    try:
        import nncf
    except ImportError as e:
        raise ImportError("int8 OpenVINO graphs need NNCF: pip install 'attnseg[openvino]'") from e
    from .openvino import convert, require_openvino

    from ...models.lseg import is_language_driven

    ov = require_openvino()
    if text is None and is_language_driven(model):
        if not getattr(model, "default_labels", None):
            raise ValueError("an LSeg model is calibrated with label embeddings; this one records no labels")
        text = model.text_encoder.encode(model.default_labels).float().numpy()
    graph = convert(ov, model)
    kind = _model_type(model)
    items = [x if text is None else {"images": x, "text_embeddings": text} for x in calib]
    ignored = label_tail(graph) if text is not None else []  # names of the ops kept in floating point
    kwargs = {"subset_size": len(items)}
    if kind == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    else:
        kwargs["preset"] = nncf.QuantizationPreset.MIXED
        convs = [op.get_friendly_name() for op in graph.get_ordered_ops() if op.get_type_name() == "Convolution"]
        ignored += convs[:1] if text is not None else [convs[0], convs[-1]]  # LSeg's last conv is in its tail
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    import logging

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its INFO lines name every op it leaves alone
    q = nncf.quantize(graph, nncf.Dataset(items), **kwargs)
    return save_ir(ov, q, model, out, {
        "precision": "int8", "tool": f"nncf {nncf.__version__}", "model_type": kind, "calibration_images": len(items),
        "preset": "default" if kind == "transformer" else "mixed",
        "float_ops": ("the label tail (downstream of text_embeddings) and the stem" if text is not None
                      else None if kind == "transformer" else "the first and the last convolution")})


def ir_path(out: str | os.PathLike) -> Path:
    """`out` as an IR path (NAME.xml; NAME.bin goes beside it), or ValueError saying so."""
    out = Path(out)
    if out.suffix != ".xml":
        raise ValueError(f"--out {out}: an OpenVINO graph is written as NAME.xml (with NAME.bin beside it)")
    return out


def save_ir(ov, graph, model, out: str | os.PathLike, quantization: dict) -> Path:
    """Write `graph` as OpenVINO IR at `out` (.xml; .bin beside it) with the model's metadata and how it was
    made in its runtime info (`attnseg`); each file through the one atomic writer, the .bin first."""
    import tempfile

    from ..export import graph_info

    out = ir_path(out)
    graph.set_rt_info(json.dumps({**graph_info(model), "quantization": quantization}), ["attnseg"])
    with tempfile.TemporaryDirectory(prefix="attnseg_ov_") as tmp:
        ov.save_model(graph, str(Path(tmp) / "m.xml"), compress_to_fp16=False)
        atomic_write_bytes(out.with_suffix(".bin"), (Path(tmp) / "m.bin").read_bytes())
        atomic_write_bytes(out, (Path(tmp) / "m.xml").read_bytes())
    return out

"""ONNX export (onnxruntime runs the graphs: deploy/backends/onnxruntime.py).

`export_onnx(model, path)` uses torch.export (dynamo) with dynamic batch / height / width, so one
file serves any input size; ISR settings active on the model are baked into the graph. The
exported graph takes `images` (B, 3, H, W, normalised float32) and returns `logits` at the model's
native stride. LSeg graphs take a second input `text_embeddings` (N, C) (L2-normalised label
embeddings, N dynamic), so one file serves any label set; the graph runtimes encode labels with the
text encoder named in the metadata and feeds them. attnseg's own metadata (class names, palette,
normalisation) is stored in the ONNX model's metadata_props under "attnseg".

Opset 20 by default: its Gelu op runs as one onnxruntime kernel (1.17 or newer), where the
erf formula of older opsets runs as five element-wise nodes. Layers with an onnxruntime-friendly
form trace it (`models.layers.export_forms`).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch

from ..io import first_line
from ..meta import META_KEYS
from ..models.efficientnet import SameConv2d


class ExportError(RuntimeError):
    """The model could not be exported; the message is one line."""


def quiet_exporter_logs() -> None:
    """The exporter logs one 'torchvision is not installed' line per torchvision op it would register."""
    import logging

    class _NoTorchvision(logging.Filter):
        def filter(self, record):
            return "torchvision is not installed" not in record.getMessage()

    logging.getLogger("torch.onnx._internal.exporter._registration").addFilter(_NoTorchvision())


class _LSegGraph(torch.nn.Module):
    """LSeg with the label embeddings as a graph input (the text encoder stays outside the graph)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return self.model(images, text_embeddings=text_embeddings)


def graph_info(model: torch.nn.Module) -> dict:
    """What a graph made from `model` carries about it: the meta keys (short_side: predict's working size), the
    variant, the output stride and, for LSeg, how to encode its labels outside the graph."""
    from ..models.lseg import is_language_driven

    info = {k: (getattr(model, "meta", None) or {}).get(k) for k in META_KEYS}
    info.update(model=getattr(model, "variant", None), output_stride=getattr(model, "output_stride", None))
    if is_language_driven(model):
        info.update(text_encoder=model.cfg.text_encoder, template=model.cfg.template,
                    default_labels=getattr(model, "default_labels", None))
    return info


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, dynamic: bool = True,
                example_size: tuple[int, int] = (256, 320), opset: int = 20) -> Path:
    """Write `model`'s ONNX graph to `path` (atomically; a full disk is one line): see `onnx_bytes`."""
    from ..io import atomic_write_bytes

    return atomic_write_bytes(path, onnx_bytes(model, dynamic, example_size, opset))  # makes the folder


def _eager_failure(graph, args) -> str | None:
    """Why the model itself fails on the example input (None when it runs): asked only after an export failed."""
    try:
        with torch.no_grad():
            graph(*args)
    except Exception as e:
        return first_line(e)[:300]
    return None


def onnx_bytes(model: torch.nn.Module, dynamic: bool = True, example_size: tuple[int, int] = (256, 320),
               opset: int = 20) -> bytes:
    """`model`'s ONNX graph (dynamo export, then TF-"same" padding folded), serialised in memory."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx extra: pip install 'attnseg[onnx]'") from e
    model = model.eval()
    x = torch.randn(2 if dynamic else 1, 3, *example_size)  # batch 2 keeps the batch dim symbolic
    from ..models.lseg import is_language_driven

    lseg = is_language_driven(model)
    variant = getattr(model, "variant", None)
    if variant is not None and not lseg:
        from ..models import has_classifier

        if not has_classifier(variant):
            raise ExportError(f"{variant} is an encoder (it returns a feature pyramid, not logits); export a "
                              "segmentation variant that uses it, e.g. segformer-b0 for mit-b0")
    args, names, graph = (x,), ["images"], model
    shapes = None
    if dynamic:
        # named dynamic axes without bounds: torch.export then takes every model in one trace (named Dims with
        # min/max made it give up on SANet's and EfficientNet's derived sizes, "Cannot create Dim with
        # inconsistent min/max", and trace a second time), and the graph's inputs keep the names
        shapes = {"images": {0: "batch", 2: "height", 3: "width"}}
    if lseg:
        text = torch.nn.functional.normalize(torch.randn(3, model.head1.out_channels), dim=1)
        args, names, graph = (x, text), ["images", "text_embeddings"], _LSegGraph(model).eval()
        if dynamic:
            shapes["text_embeddings"] = {0: "labels"}
    from ..models.layers import export_forms

    quiet_exporter_logs()
    try:
        with export_forms(), warnings.catch_warnings():  # the onnxruntime-friendly forms of a few layers
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")  # torch-internal pytree notice
            prog = torch.onnx.export(graph, args, dynamo=True, input_names=names, output_names=["logits"],
                                     dynamic_shapes=shapes, opset_version=opset, optimize=True, verbose=False)
    except Exception as e:
        name = getattr(model, "variant", type(model).__name__)
        why = _eager_failure(graph, args)  # the exporter's own message is about its trace, not the cause
        if why is not None:
            raise ExportError(f"cannot export {name}: it does not run on an input of {x.shape[2]}x{x.shape[3]} "
                              f"({why}); export at a larger --size") from None
        first = re.sub(r"\x1b\[[0-9;]*m", "", first_line(e))  # the exporter colours its messages
        raise ExportError(f"cannot export {name} to ONNX{' with dynamic shapes' if dynamic else ''}: "
                          f"{type(e).__name__}: {first[:300]}") from e
    prog.model.metadata_props["attnseg"] = json.dumps(graph_info(model))
    proto = prog.model_proto
    fold_same_padding(proto)
    return proto.SerializeToString()


SAME_PAD_MODULE = f"{SameConv2d.__module__}.{SameConv2d.__qualname__}"  # the class torch.onnx records


def fold_same_padding(proto) -> int:
    """Fold the dynamic Pad of each TF-"same" convolution (EfficientNet's stride-2 convs, `SameConv2d`) into
    its Conv as auto_pad=SAME_UPPER: ONNX's definition (output ceil(i/s), total padding
    max((ceil(i/s) - 1) s + k_eff - i, 0), the odd pixel at the end) is SameConv2d's, so the graph computes
    the same function for every input size. Without it the pad amounts are shape arithmetic at run time,
    and in an int8 graph each Pad runs in fp32 between a DequantizeLinear and a QuantizeLinear. Returns the
    number of Pads folded; shape nodes left without consumers are removed."""
    import onnx

    g = proto.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    folded = []
    for n in g.node:
        if n.op_type != "Pad":
            continue
        meta = {p.key: p.value for p in n.metadata_props}
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if SAME_PAD_MODULE not in meta.get("pkg.torch.onnx.class_hierarchy", ""):
            continue
        if attrs.get("mode", b"constant") not in (b"constant", "constant"):
            continue
        if len(n.input) > 2 and n.input[2] and not (n.input[2] in consts and float(consts[n.input[2]]) == 0.0):
            continue
        users = consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != n.output[0]:
            continue
        conv = users[0]
        cattrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
        if any(cattrs.get("pads", [0])) or cattrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        keep = [a for a in conv.attribute if a.name not in ("pads", "auto_pad")]
        del conv.attribute[:]
        conv.attribute.extend(keep + [onnx.helper.make_attribute("auto_pad", "SAME_UPPER")])
        conv.input[0] = n.input[0]
        folded.append(n)
    for n in folded:
        g.node.remove(n)
    while True:  # drop nodes none of whose outputs is used any more (the pads' shape arithmetic)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    return len(folded)

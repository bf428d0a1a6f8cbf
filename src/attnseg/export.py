"""ONNX export and an onnxruntime inference backend.

`export_onnx(model, path)` uses torch.export (dynamo) with dynamic batch / height / width, so one
file serves any input size; ISR settings active on the model are baked into the graph. The
exported graph takes `images` (B, 3, H, W, normalised float32) and returns `logits` at the model's
native stride. LSeg graphs take a second input `text_embeddings` (N, C) (L2-normalised label
embeddings, N dynamic), so one file serves any label set; OnnxModel encodes labels with the
text encoder named in the metadata and feeds them. attnseg's own metadata (class names, palette,
normalisation) is stored in the ONNX model's metadata_props under "attnseg".

Opset 20 by default: its Gelu op runs as one onnxruntime kernel (1.17 or newer), where the
erf formula of older opsets runs as five element-wise nodes. Layers with an onnxruntime-friendly
form trace it (`models.layers.export_forms`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch


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


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, dynamic: bool = True,
                example_size: tuple[int, int] = (256, 320), opset: int = 20) -> Path:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx extra: pip install 'attnseg[onnx]'") from e
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2 if dynamic else 1, 3, *example_size)  # batch 2 keeps the batch dim symbolic
    from .models.lseg import is_language_driven

    lseg = is_language_driven(model)
    variant = getattr(model, "variant", None)
    if variant is not None and not lseg:
        from .models import has_classifier

        if not has_classifier(variant):
            raise ExportError(f"{variant} is an encoder (it returns a feature pyramid, not logits); export a "
                              "segmentation variant that uses it, e.g. segformer-b0 for mit-b0")
    args, names, graph = (x,), ["images"], model
    shapes = None
    if dynamic:
        dim = torch.export.Dim
        shapes = {"images": {0: dim("batch", min=1, max=256), 2: dim("height", min=64, max=8192),
                             3: dim("width", min=64, max=8192)}}
    if lseg:
        text = torch.nn.functional.normalize(torch.randn(3, model.head1.out_channels), dim=1)
        args, names, graph = (x, text), ["images", "text_embeddings"], _LSegGraph(model)
        if dynamic:
            shapes["text_embeddings"] = {0: torch.export.Dim("labels", min=1, max=4096)}
    from .io import atomic_write
    from .models.layers import export_forms

    quiet_exporter_logs()

    def run(dynamic_shapes):
        with export_forms():  # the onnxruntime-friendly forms of a few layers (same outputs)
            return torch.onnx.export(graph, args, dynamo=True, input_names=names, output_names=["logits"],
                                     dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=True, verbose=False)

    try:
        try:
            prog = run(shapes)
        except Exception:
            if not dynamic:
                raise
            # torch.export cannot state the bounds of some derived sizes (SANet's ceil-mode pooling on
            # EfficientNet's "same" padding: "Cannot create Dim with inconsistent min/max"); unnamed
            # DYNAMIC dims take the same graph without asking for bounds
            prog = run({k: {ax: torch.export.Dim.DYNAMIC for ax in v} for k, v in shapes.items()})
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ExportError(f"cannot export {getattr(model, 'variant', type(model).__name__)} to ONNX"
                          f"{' with dynamic shapes' if dynamic else ''}: {type(e).__name__}: {first[:300]}") from e
    info = {k: getattr(model, "meta", {}).get(k) for k in ("class_names", "palette", "mean", "std")}
    info.update(model=getattr(model, "variant", None), output_stride=getattr(model, "output_stride", None))
    if lseg:
        info.update(text_encoder=model.cfg.text_encoder, template=model.cfg.template,
                    default_labels=model.default_labels)
    prog.model.metadata_props["attnseg"] = json.dumps(info)
    return atomic_write(path, lambda tmp: prog.save(str(tmp)))


class OnnxModel:
    """A callable with the model interface (`images` tensor in, logits tensor out) running in onnxruntime."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("the onnx backend needs onnxruntime: pip install 'attnseg[onnx]'") from e
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get("attnseg")
        info = json.loads(meta) if meta else {}
        from .hub import default_meta

        self.meta = {k: info.get(k) or default_meta().get(k) for k in ("class_names", "palette", "mean", "std")}
        self.variant = info.get("model")
        dims = self.session.get_inputs()[0].shape
        self.fixed_size = tuple(dims[2:4]) if all(isinstance(d, int) for d in dims[2:4]) else None
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        out = self.session.get_outputs()[0]
        self.num_classes = out.shape[1] if isinstance(out.shape[1], int) else None
        self.training = False
        self.lseg = "text_embeddings" in [i.name for i in self.session.get_inputs()]
        if self.lseg:
            self.num_classes = None
            self._text_spec = (info.get("text_encoder") or "minilm", info.get("template"))
            self._text = None
            self.default_labels = info.get("default_labels")

    def __getattr__(self, name):
        if name == "text_encoder" and self.__dict__.get("lseg"):  # LSeg graphs: encode labels outside the graph
            if self._text is None:
                from .models.text import get_text_encoder

                self._text = get_text_encoder(*self._text_spec)
            return self._text
        raise AttributeError(name)

    def __call__(self, images: torch.Tensor, labels: list[str] | None = None,
                 text_embeddings: torch.Tensor | None = None, **kw) -> torch.Tensor:
        if self.fixed_size and tuple(images.shape[-2:]) != self.fixed_size:
            raise ValueError(f"this ONNX graph was exported for {self.fixed_size[0]}x{self.fixed_size[1]} inputs, got "
                             f"{images.shape[-2]}x{images.shape[-1]}; export with --dynamic for any size")
        if self.fixed_batch and images.shape[0] != self.fixed_batch:  # e.g. slide windows through a batch-1 graph
            b = self.fixed_batch
            return torch.cat([self(images[i:i + b], labels, text_embeddings) for i in range(0, images.shape[0], b)])
        feeds = {"images": np.ascontiguousarray(images.detach().float().cpu().numpy())}
        if self.lseg:
            if text_embeddings is None:
                from .models.text import check_labels

                labels = labels if labels is not None else self.default_labels
                if labels is None:
                    raise ValueError("this LSeg graph needs labels: model(images, labels=['sky', 'road', 'other'])")
                text_embeddings = self.text_encoder.encode(check_labels(labels))
            feeds["text_embeddings"] = np.ascontiguousarray(text_embeddings.detach().float().cpu().numpy())
        elif labels is not None or text_embeddings is not None:
            raise ValueError("labels were given, but this ONNX model has fixed classes")
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *a, **k):
        return self

    def parameters(self):
        return iter([torch.zeros(1)])

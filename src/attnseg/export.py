"""ONNX export and an onnxruntime inference backend.

`export_onnx(model, path)` uses torch.export (dynamo) with dynamic batch / height / width, so one
file serves any input size; ISR settings active on the model are baked into the graph. The
exported graph takes `images` (B, 3, H, W, normalised float32) and returns `logits` at the model's
native stride. attnseg's own metadata (class names, palette, normalisation) is stored in the ONNX
model's metadata_props under "attnseg".
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, dynamic: bool = True,
                example_size: tuple[int, int] = (256, 320), opset: int = 18) -> Path:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx extra: pip install 'attnseg[onnx]'") from e
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2 if dynamic else 1, 3, *example_size)  # batch 2 keeps the batch dim symbolic
    shapes = None
    if dynamic:
        dim = torch.export.Dim
        shapes = {"images": {0: dim("batch", min=1, max=256), 2: dim("height", min=64, max=8192),
                             3: dim("width", min=64, max=8192)}}
    tmp = path.with_name(f".{path.name}.tmp")
    prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["images"], output_names=["logits"],
                             dynamic_shapes=shapes, opset_version=opset, optimize=True, verbose=False)
    info = {k: getattr(model, "meta", {}).get(k) for k in ("class_names", "palette", "mean", "std")}
    info.update(model=getattr(model, "variant", None), output_stride=getattr(model, "output_stride", None))
    prog.model.metadata_props["attnseg"] = json.dumps(info)
    prog.save(str(tmp))
    os.replace(tmp, path)
    return path


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
        out = self.session.get_outputs()[0]
        self.num_classes = out.shape[1] if isinstance(out.shape[1], int) else None
        self.training = False

    def __call__(self, images: torch.Tensor, **kw) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"images": x})[0])

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *a, **k):
        return self

    def parameters(self):
        return iter([torch.zeros(1)])

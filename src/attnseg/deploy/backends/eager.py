"""Eager PyTorch: the model as loaded, on its device; bf16 runs it under autocast (weights stay fp32), which
`attnseg.Segmenter` turns on from the model's `precision`."""
from __future__ import annotations

from .base import Backend, BackendError, Source


class EagerBackend(Backend):
    name = "eager"
    precisions = ("fp32", "bf16")

    def unsupported(self, precision, machine, source):
        if source.module is None:
            return "a graph file runs in its graph runtime, not eagerly"
        return super().unsupported(precision, machine, source)

    def prepare(self, source: Source, precision: str, threads=None, fixed=None, callers=1):
        if source.module is None:
            raise BackendError(f"{source.name} is a graph file; run it with --backend onnx or openvino")
        model = source.module  # with its ISR setting applied (attnseg.open)
        model.backend, model.precision = "eager", precision
        return model


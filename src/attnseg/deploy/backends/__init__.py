"""The runtimes a model can run in, one module each behind one interface (`base.Backend`): eager PyTorch,
onnxruntime and OpenVINO. `attnseg.open` (deploy.runtime) is the only caller that constructs them; it picks one
by name or, for `auto`, by measuring the eligible ones on this machine (deploy.tune)."""
from __future__ import annotations

from .base import Backend, BackendError, GraphModel, Source
from .eager import EagerBackend
from .onnxruntime import OnnxBackend
from .openvino import OpenVinoBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (EagerBackend(), OnnxBackend(), OpenVinoBackend())}

__all__ = ["BACKENDS", "Backend", "BackendError", "GraphModel", "Source"]

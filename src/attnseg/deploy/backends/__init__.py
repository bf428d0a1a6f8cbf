"""Runtimes a trained model can run in besides eager PyTorch, behind one interface (`images` in, logits out,
`meta`, LSeg's labels): onnxruntime (`attnseg.deploy.export.OnnxModel`) and OpenVINO (`backends.openvino`).

`choose(model)` is `--backend auto`: OpenVINO bf16 where the model's recorded CamVid test mIoU in OpenVINO bf16 is
within `TOLERANCE` points of fp32 (pretrained/precision.json, written by benchmarks/precision.py) and the CPU
has bf16 kernels; OpenVINO fp32 for other models when OpenVINO is installed (exact within float rounding);
eager PyTorch fp32 otherwise.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TOLERANCE = 0.3  # mIoU points a faster precision may lose against fp32 and still be chosen
RECORD = Path(__file__).resolve().parents[2] / "pretrained" / "precision.json"


@lru_cache(maxsize=1)
def recorded() -> dict:
    """{model name: {"eager-fp32": mIoU, "openvino-fp32": ..., "openvino-bf16": ..., ...}} (CamVid test)."""
    try:
        return json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {}


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose(model, dtype: str = "fp32") -> tuple[str, str]:
    """(backend, precision) for --backend auto. `dtype` bf16 asks for bf16 whatever the record says."""
    if not openvino_available():
        return "eager", dtype
    name = str(getattr(model, "source", "") or "")
    rec = recorded().get(name, {})
    fp32, bf16 = rec.get("eager-fp32"), rec.get("openvino-bf16")
    if dtype == "bf16" or (fp32 is not None and bf16 is not None and fp32 - bf16 <= TOLERANCE):
        if cpu_has_bf16():
            return "openvino", "bf16"
    return "openvino", "fp32"

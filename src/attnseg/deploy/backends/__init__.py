"""Runtimes a trained model can run in besides eager PyTorch, behind one interface (`images` in, logits out,
`meta`, LSeg's labels): onnxruntime (`attnseg.deploy.export.OnnxModel`) and OpenVINO (`backends.openvino`).

`choose(model)` is `--backend auto` (the default of predict, eval, serve and video): OpenVINO bf16 where the
model's recorded CamVid test mIoU in OpenVINO bf16 is within `TOLERANCE` points of fp32 (pretrained/precision.json,
written by scripts/precision_record.py) and the CPU has bf16 kernels; OpenVINO fp32 for other recorded models;
eager PyTorch for models without a record and where OpenVINO is not installed. OpenVINO int8 graphs are not
chosen: on the AVX512-BF16 CPU of results/precision they ran slower than bf16 for every shipped model.
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


def choose(model, dtype: str | None = None) -> tuple[str, str]:
    """(backend, precision) for --backend auto, the default of predict, eval, serve and video.

    A model with a recorded CamVid test mIoU (the shipped ones) runs in OpenVINO bf16 where that record is within
    `TOLERANCE` points of fp32 and the CPU has bf16 kernels, in OpenVINO fp32 otherwise. A model without a record
    (a user's checkpoint, random weights) runs eagerly: nothing measured says another path keeps its accuracy, and
    its first OpenVINO run would pay a conversion (4-30 s) that one image does not repay; `--backend openvino`
    asks for it. `dtype` given explicitly is kept (bf16 or fp32) on whichever backend is chosen. Without the
    openvino extra: eager."""
    name = str(getattr(model, "source", "") or "")
    rec = recorded().get(name)
    if not openvino_available() or rec is None:
        return "eager", dtype or "fp32"
    if dtype is not None:
        return "openvino", "bf16" if dtype == "bf16" and cpu_has_bf16() else "fp32"
    precision = recorded_precision(rec)
    return "openvino", precision if precision == "fp32" or cpu_has_bf16() else "fp32"


def recorded_precision(rec: dict) -> str:
    """The OpenVINO precision a model's record allows: bf16 within `TOLERANCE` mIoU points of fp32, else fp32."""
    fp32, bf16 = rec.get("eager-fp32"), rec.get("openvino-bf16")
    return "bf16" if fp32 is not None and bf16 is not None and fp32 - bf16 <= TOLERANCE else "fp32"

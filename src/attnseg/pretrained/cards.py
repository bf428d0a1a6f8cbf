"""Model cards of the shipped weights: what each was trained on and how, what it scores per backend and
precision, how fast it runs, what it is for and where it fails. Read without torch (the CLI's
`attnseg models --card NAME`, the server's model list and the docs all show the same card).

Facts written by hand live in cards.json; the numbers come from the records `scripts/precision_record.py`
writes from results/ (precision.json: CamVid test mIoU per backend and precision; speed.json: images/s per
CPU class measured: avx512-bf16, avx2, ... as `deploy.backends.cpu` names them),
so a card's numbers change only when the measurements do.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import PRETRAINED, PRETRAINED_DIR

FIELDS = (("task", "Task"), ("architecture", "Architecture"), ("training", "Training data and recipe"),
          ("command", "Command"), ("working_size", "Working size"), ("weights", "Weights"),
          ("intended_use", "Intended use"), ("limits", "Known limits"), ("licence", "Licence"))
COLUMNS = {"eager-fp32": "PyTorch fp32", "eager-bf16": "PyTorch bf16", "onnx-fp32": "onnxruntime fp32",
           "onnx-int8": "onnxruntime int8", "openvino-fp32": "OpenVINO fp32", "openvino-bf16": "OpenVINO bf16",
           "openvino-int8": "OpenVINO int8", "openvino-int8-bf16": "OpenVINO int8 (+bf16)"}


def _read(name: str) -> dict:
    try:
        return json.loads((PRETRAINED_DIR / name).read_text())
    except (OSError, ValueError):
        return {}


def class_names(name: str) -> list[str]:
    """The class names a shipped file records (read from its safetensors header, no tensor loaded)."""
    path = PRETRAINED_DIR / PRETRAINED[name]
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return list(json.loads(meta["attnseg"]).get("class_names") or [])
    except (OSError, ValueError, KeyError):
        return []


def card(name: str) -> dict:
    """The card of a shipped model: its facts, classes, file size, mIoU per backend and precision, speed."""
    facts = _read("cards.json").get(name)
    if facts is None:
        raise KeyError(f"no model card for {name!r}; cards exist for {', '.join(sorted(_read('cards.json')))}")
    path = PRETRAINED_DIR / PRETRAINED[name]
    return {"name": name, **facts, "classes": class_names(name),
            "size_mb": round(path.stat().st_size / 1e6, 1) if path.is_file() else None,
            "miou": _read("precision.json").get(name, {}), "speed": _read("speed.json").get(name, {})}


def names() -> list[str]:
    return sorted(_read("cards.json"))


def _rows(c: dict) -> list[tuple[str, ...]]:
    """(backend and precision, CamVid test mIoU, images/s on each CPU class measured) for every column measured."""
    per_class = [s.get("images_per_s", {}) for s in c["speed"].values()]
    keys = [k for k in COLUMNS if k in c["miou"] or any(k in ips for ips in per_class)]
    return [(COLUMNS[k], f"{c['miou'][k]:.2f}" if k in c["miou"] else "-",
             *(f"{ips[k]:.1f}" if k in ips else "-" for ips in per_class)) for k in keys]


def _where(c: dict) -> list[str]:
    """One line per CPU class the speeds were measured on."""
    return [f"{cls}: images/s at {s.get('size', '-')} on {s.get('threads', '-')} threads of {s.get('machine', '-')}"
            for cls, s in c["speed"].items()]


def markdown(name: str) -> str:
    """The card as a Markdown page (docs/cards/NAME.md is this text)."""
    c = card(name)
    out = [f"# {name}", "", c["title"] + ".", ""]
    for key, label in FIELDS:
        if c.get(key):
            out.append(f"- **{label}**: {c[key]}")
    out += [f"- **Classes** ({len(c['classes'])}): {', '.join(c['classes'])}" if c["classes"] else "",
            f"- **File**: {c['size_mb']} MB", "", "## CamVid test mIoU and speed", "",
            "mIoU: 233 test images at the working size. Speed per CPU class measured (CPUs with other kernels, "
            "such as AVX2 only, differ: `attnseg tune` measures yours):", ""]
    out += [f"- {line}" for line in _where(c)] + [""]
    classes = list(c["speed"])
    out += ["| backend and precision | mIoU (%) | " + " | ".join(f"images/s ({k})" for k in classes) + " |",
            "| --- | --- |" + " --- |" * len(classes)]
    out += ["| " + " | ".join(row) + " |" for row in _rows(c)]
    src = sorted({f for s in c["speed"].values() for f in s.get("sources", [])})
    if src:
        out += ["", f"Measured by: {', '.join(f'`{s}`' for s in src)}."]
    return "\n".join(line for i, line in enumerate(out) if line or (i and out[i - 1])) + "\n"


def text(name: str) -> str:
    """The card as plain text for a terminal."""
    c = card(name)
    lines = [f"{name}: {c['title']}"]
    for key, label in FIELDS:
        if c.get(key):
            lines.append(f"  {label}: {c[key]}")
    if c["classes"]:
        lines.append(f"  Classes ({len(c['classes'])}): {', '.join(c['classes'])}")
    lines.append(f"  File: {c['size_mb']} MB")
    rows = _rows(c)
    if rows:
        lines.append("  CamVid test mIoU / images/s (" + "; ".join(_where(c)) + "):")
        lines += [f"    {row[0]:<24} {row[1]:>6}  " + "  ".join(f"{s:>6}" for s in row[2:]) for row in rows]
    return "\n".join(lines)

"""The registry's parameter counts and descriptions as JSON (models/param_counts.json), readable without
importing torch: `attnseg models` lists every variant from it; tests keep it equal to the built models."""
from __future__ import annotations

import json
from pathlib import Path

PARAM_COUNTS_FILE = Path(__file__).parent / "models" / "param_counts.json"


def read_table() -> dict:
    """{name: {"params": [p150, p151, p152], "description": str}}."""
    return json.loads(PARAM_COUNTS_FILE.read_text()) if PARAM_COUNTS_FILE.is_file() else {}


def params_at(p: list[int], k: int) -> int:
    """Counts at 150, 151, 152 classes -> the count at k: exact for counts quadratic in k (SANet's class-wise
    heads concatenate 4 K-channel masks into a 4K -> K classifier; the rest are affine)."""
    d1, d2 = p[1] - p[0], p[2] - 2 * p[1] + p[0]
    return p[0] + (k - 150) * d1 + (k - 150) * (k - 151) // 2 * d2

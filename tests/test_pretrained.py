"""Shipped weights load offline by name and segment the CamVid examples sensibly."""
from pathlib import Path

import numpy as np
import pytest

import attnseg
from attnseg.hub import PRETRAINED, PRETRAINED_DIR

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_shipped_model_loads_offline_and_segments_examples(name):
    path = PRETRAINED_DIR / PRETRAINED[name]
    assert path.is_file(), f"{name} is registered but {path} is not in the package"
    assert path.stat().st_size <= 25 * 2**20
    assert name in attnseg.list_pretrained()
    model = attnseg.load_model(name)
    assert model.meta["class_names"][3] == "road" and len(model.meta["palette"]) == 11
    seg = attnseg.Segmenter(model)
    img = sorted(EXAMPLES.glob("camvid_test_*.png"))[0]
    label = seg.predict(img)
    assert label.shape == (360, 480)
    counts = np.bincount(label.ravel(), minlength=11) / label.size
    assert counts[3] > 0.15 and counts[0] > 0.02  # a CamVid street scene: plenty of road, some sky

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CAMVID = SHARED_DATA / "camvid"
ADE_SAMPLE = SHARED_DATA / "ade20k_sample"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def camvid_root():
    if not (CAMVID / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {CAMVID} (see ../shared/data/README.md)")
    return CAMVID


@pytest.fixture
def ade_sample_root():
    if not (ADE_SAMPLE / "objectInfo150.csv").is_file():
        pytest.skip(f"ADE20K sample not found at {ADE_SAMPLE}")
    return ADE_SAMPLE


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A random segformer-tiny checkpoint (3 classes) that records a working short side of 48."""
    import attnseg

    torch.manual_seed(0)
    m = attnseg.create_model("segformer-tiny", num_classes=3)
    return str(attnseg.save_model(m, tmp_path / "tiny.safetensors", class_names=["sky", "road", "car"],
                                  short_side=48))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running stats and affine params (parity tests must see them)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)

"""Metrics against hand-computed values; inference modes."""
import math

import pytest
import torch

from attnseg.inference.modes import InferenceConfig, infer, slide_logits
from attnseg.engine.metrics import ConfusionMatrix, format_table


def test_metrics_hand_computed_with_ignore_and_absent_classes():
    # 4 classes; class 3 appears in neither GT nor prediction; class 2 only predicted; 255 ignored
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 1, 0, 3]])  # last pixel ignored whatever it predicts
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    assert cm.mat.tolist() == [[1, 1, 1, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    m = cm.compute()
    assert m["pixels"] == 7
    assert m["aAcc"] == pytest.approx(4 / 7)
    # Acc: class0 1/3, class1 3/4, class2 nan (no GT), class3 nan
    assert m["Acc"][0] == pytest.approx(1 / 3) and m["Acc"][1] == pytest.approx(3 / 4)
    assert math.isnan(m["Acc"][2]) and math.isnan(m["Acc"][3])
    # IoU: class0 1/(3+2-1)=1/4, class1 3/(4+4-3)=3/5, class2 0/(0+1-0)=0, class3 nan (absent from both)
    assert m["IoU"][:3] == pytest.approx([1 / 4, 3 / 5, 0.0]) and math.isnan(m["IoU"][3])
    assert m["mIoU"] == pytest.approx((1 / 4 + 3 / 5 + 0) / 3)
    assert m["mAcc"] == pytest.approx((1 / 3 + 3 / 4) / 2)
    assert "nan" in format_table(m, ["a", "b", "c", "d"])


def test_fb_iou_binary():
    target = torch.tensor([0, 0, 1, 1, 1])
    pred = torch.tensor([0, 1, 1, 1, 0])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    m = cm.compute(background=0)
    # bg IoU = 1/(2+2-1) = 1/3; fg IoU = 2/(3+3-2) = 1/2
    assert m["FB-IoU"] == pytest.approx((1 / 3 + 1 / 2) / 2)


class Linear1x1(torch.nn.Module):
    """A per-pixel model: slide and whole inference must agree exactly (no context)."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)


def test_slide_matches_whole_for_per_pixel_model_and_handles_small_images():
    torch.manual_seed(0)
    m = Linear1x1().eval()
    x = torch.randn(2, 3, 70, 95)
    whole = infer(m, x, InferenceConfig("whole"))
    slide = infer(m, x, InferenceConfig("slide", crop=32, stride=20, window_batch=3))
    assert torch.allclose(whole, slide, atol=1e-6)
    small = torch.randn(1, 3, 20, 25)  # smaller than the crop: padded, then cropped back
    assert slide_logits(m, small, 3, (32, 32), (16, 16)).shape == (1, 3, 20, 25)
    assert torch.allclose(slide_logits(m, small, 3, (32, 32), (16, 16)), m(small), atol=1e-6)


def test_multiscale_flip_returns_probabilities():
    torch.manual_seed(0)
    m = Linear1x1().eval()
    x = torch.randn(1, 3, 40, 50)
    p = infer(m, x, InferenceConfig("whole", scales=[0.5, 1.0, 1.5], flip=True))
    assert p.shape == (1, 3, 40, 50)
    assert torch.allclose(p.sum(1), torch.ones(1, 40, 50), atol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        InferenceConfig("slide", crop=32, stride=40)

"""`Segmenter`: a model with its pre- and post-processing, for images in, label maps out."""
from __future__ import annotations

import numpy as np
import torch

from .engine.inference import InferenceConfig, infer
from .hub import default_meta
from .io import default_palette, to_rgb_array
from .models.layers import resize


class Segmenter:
    """Wrap a model so that `Segmenter(model).predict(image)` gives an (H, W) label map at the image's size.

    image: a path, PIL image or (H, W, 3) uint8 RGB array. `size` resizes the short side before
    inference (None keeps the native resolution); `inference` chooses whole/slide/multi-scale.
    Normalisation, class names and palette come from the model's metadata (`model.meta`).
    """

    def __init__(self, model, size: int | None = None, inference: InferenceConfig | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32):
        self.model = model.eval()
        self.meta = dict(default_meta(), **(getattr(model, "meta", None) or {}))
        self.size = size
        self.inference = inference or InferenceConfig()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype
        self.model.to(self.device)
        n = getattr(model, "num_classes", None)  # None for LSeg: the labels decide
        self.class_names = self.meta.get("class_names") or ([f"class {i}" for i in range(n)] if n else None)
        self.palette = self.meta.get("palette") or default_palette(max(n or 0, 256))
        self._mean = torch.tensor(self.meta["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.meta["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        rgb = to_rgb_array(image)
        h, w = rgb.shape[:2]
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float()
        x = (x - self._mean) / self._std
        if self.size:
            s = self.size / min(h, w)
            x = resize(x, (max(round(h * s), 1), max(round(w * s), 1)))
        return x, (h, w)

    @torch.inference_mode()
    def scores(self, image, **kw) -> torch.Tensor:
        """Per-class scores (K, H, W) at the image's size (logits, or mean probabilities with TTA)."""
        x, (h, w) = self.preprocess(image)
        x = x.to(self.device, self.dtype)
        out = infer(self.model, x, self.inference, **kw)
        return resize(out.float(), (h, w))[0]

    def predict(self, image, **kw) -> np.ndarray:
        """Label map (H, W) of class indices at the input's size."""
        return self.scores(image, **kw).argmax(0).to(torch.int32).cpu().numpy()

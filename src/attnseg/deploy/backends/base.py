"""The one interface every runtime implements, and what the runtime hands each of them.

A backend (`Backend`) says whether its library is installed, which precisions it runs and which of them this
machine runs with its own kernels, and prepares a runnable model from a `Source` (a model the library loaded, a
graph file, the graphs shipped beside trained weights). A runnable model takes a normalised `images` tensor and
returns logits at the model's stride, with `meta`, `num_classes`, `backend`, `precision` and, for LSeg, labels:
`attnseg.Segmenter` runs any of them. Graph runtimes subclass `GraphModel`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...meta import meta_from
from .cpu import Machine


@dataclass
class Source:
    """What `attnseg.open` was given, resolved: `module` (a PyTorch model, None for a graph file), `path` (the
    graph file given), `graphs` (kind -> file shipped with the weights: "fp32.onnx", "int8.onnx", "int8.xml"),
    `key` (what identifies the weights in caches), `record` (CamVid test mIoU per backend-precision, shipped
    models only), `agreement` (pixel agreement with fp32 on the user's calibration images, deploy.calibrate)
    and `isr` (the ISR setting to run with; graphs bake it in)."""

    name: str
    module: torch.nn.Module | None = None
    path: Path | None = None
    graphs: dict[str, Path] = field(default_factory=dict)
    key: str = ""
    record: dict | None = None
    isr: str | None = None
    agreement: dict | None = None  # pixel agreement with fp32 per backend-precision on calibration images
    progress: object = None  # callable(str): one line about slow work in progress (export, conversion)

    def say(self, line: str) -> None:
        if self.progress:
            self.progress(line)


class BackendError(RuntimeError):
    """A backend cannot run this source at this precision here; the message is one line."""


def read_onnx(path):
    """The ONNX proto of a graph file, without its external weights; BackendError in one line for a file that is
    not one."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, or a file that cannot be read
        raise BackendError(f"{Path(path).name} is not an ONNX graph ({type(e).__name__}): write one with "
                           "`attnseg export`") from None


def check_graph_io(path, input_names: list[str], image_dims: list | None, output_dims: list | None) -> None:
    """Raise BackendError unless a loaded graph is one attnseg runs: an `images` input (batch, 3, height, width)
    and scores (batch, classes, height, width) out. Dims are ints, or None/str where dynamic."""
    fixed3 = image_dims is not None and len(image_dims) == 4 and (image_dims[1] == 3 or not isinstance(image_dims[1],
                                                                                                     int))
    if not (fixed3 and output_dims is not None and len(output_dims) == 4):
        raise BackendError(f"{Path(path).name} is not a segmentation graph attnseg can run (its inputs: "
                           f"{', '.join(input_names) or 'none'}; it takes `images` (batch, 3, height, width) and gives "
                           "scores (batch, classes, height, width)): write one with `attnseg export`")


class Backend:
    """One runtime. Subclasses set `name`, `precisions` and `library`, and implement `prepare`."""

    name = ""
    precisions: tuple[str, ...] = ("fp32",)
    library: str | None = None  # the module that must import (None: torch itself)
    install_hint = ""

    def missing(self) -> str | None:
        """None when the runtime is installed, else the one-line install hint."""
        if self.library is None:
            return None
        try:
            __import__(self.library)
        except ImportError:
            return self.install_hint
        return None

    def unsupported(self, precision: str, machine: Machine, source: Source) -> str | None:
        """None when this backend can run `source` at `precision` here, else why not (whether it runs fast on
        this CPU's kernels is `deploy.tune`'s question)."""
        if precision not in self.precisions:
            return f"{self.name} runs {', '.join(self.precisions)}, not {precision}"
        return None

    def ready(self, source: Source, precision: str) -> bool:
        """Whether `prepare` can start at once: False when it must first export or convert the model (30-60 s on
        2 cores), which `auto` leaves to `attnseg tune` where a ready candidate exists."""
        return True

    def prepare(self, source: Source, precision: str, threads: int | None = None,
                fixed: tuple[int, int] | None = None, callers: int = 1):
        """A runnable model. fixed: (height, width) the graph is specialised to (None: any size). callers: how
        many threads call it at once (the video pipeline's workers): graph runtimes then run each call on fewer
        threads, or in streams."""
        raise NotImplementedError



class GraphModel:
    """The model interface (`images` tensor in, logits tensor out; `meta`, `num_classes`, LSeg's labels) over a
    compiled graph. A runtime subclass opens the graph and implements `_run(feeds) -> logits array`."""

    backend = "graph"
    precision = "fp32"

    def _setup(self, info: dict, input_names: list[str], image_dims: list, out_channels) -> None:
        """info: the attnseg metadata the graph carries; image_dims: the images input's 4 dims (int = fixed)."""
        self.meta = meta_from(info, fill_none=True)
        self.variant = info.get("model")
        self.fixed_size = tuple(image_dims[2:4]) if all(isinstance(d, int) for d in image_dims[2:4]) else None
        self.fixed_batch = image_dims[0] if isinstance(image_dims[0], int) else None
        self.num_classes = out_channels if isinstance(out_channels, int) else None
        self.training = False
        self.lseg = "text_embeddings" in input_names
        if self.lseg:
            self.num_classes = None
            self._text_spec = (info.get("text_encoder") or "minilm", info.get("template"))
            self._text = None
            self.default_labels = info.get("default_labels")

    def __getattr__(self, name):
        if name == "text_encoder" and self.__dict__.get("lseg"):  # LSeg graphs: encode labels outside the graph
            if self._text is None:
                from ...models.text import get_text_encoder

                self._text = get_text_encoder(*self._text_spec)
            return self._text
        raise AttributeError(name)

    def _run(self, feeds: dict) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: list[str] | None = None,
                 text_embeddings: torch.Tensor | None = None, **kw) -> torch.Tensor:
        if self.fixed_size and tuple(images.shape[-2:]) != self.fixed_size:
            raise ValueError(f"this graph was exported for {self.fixed_size[0]}x{self.fixed_size[1]} inputs, got "
                             f"{images.shape[-2]}x{images.shape[-1]}; export with --dynamic for any size")
        if self.fixed_batch and images.shape[0] != self.fixed_batch:  # e.g. slide windows through a batch-1 graph
            b = self.fixed_batch
            return torch.cat([self(images[i:i + b], labels, text_embeddings) for i in range(0, images.shape[0], b)])
        feeds = {"images": np.ascontiguousarray(images.detach().float().cpu().numpy())}
        if self.lseg:
            if text_embeddings is None:
                from ...models.text import check_labels

                labels = labels if labels is not None else self.default_labels
                if labels is None:
                    raise ValueError("this LSeg graph needs labels: model(images, labels=['sky', 'road', 'other'])")
                text_embeddings = self.text_encoder.encode(check_labels(labels))
            feeds["text_embeddings"] = np.ascontiguousarray(text_embeddings.detach().float().cpu().numpy())
        elif labels is not None or text_embeddings is not None:
            raise ValueError("labels were given, but this graph has fixed classes")
        return torch.from_numpy(self._run(feeds))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *a, **k):
        return self

"""Several names and prompt templates per class for LSeg training.

MiniLM was never aligned with images, so a word the model was not trained on works only as far as the text
encoder puts it near a trained one. Training against one fixed name per class teaches the image encoder
those 11 points in text space; drawing, at every iteration, one name per class from a list and one prompt
template per class spreads the supervision over a neighbourhood of each class in text space.

Label noise (`data.label_noise` = sigma) goes one step further: each drawn embedding t (unit length, C
channels) becomes normalize(t + sigma * g / sqrt(C)) with g ~ N(0, I), so the perturbation has norm ~sigma
and the class is trained against a ball around each of its prompts rather than the points themselves
(sigma 0.5 keeps a cosine of ~0.89 to t; MiniLM puts synonyms such as road/roadway at cosine 0.5-0.9).

The draw (names, templates and noise) is a pure function of (seed, iteration), so a resumed run draws
exactly what it would have drawn.
Classes are always distinct at one iteration (each class draws from its own list, and the lists of
different classes must not share a name).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from .. import yamltext
from ..io import first_line


class VocabularyError(ValueError):
    pass


class LabelVocabulary:
    def __init__(self, class_names: list[str], names: dict[str, list[str]] | None = None,
                 templates: list[str] | None = None, seed: int = 0, noise: float = 0.0):
        names = dict(names or {})
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise VocabularyError(f"data.label_names has classes the dataset does not: {unknown}; its classes are "
                                  f"{list(class_names)}")
        self.choices: list[list[str]] = []
        owner: dict[str, str] = {}
        for c in class_names:
            opts = list(dict.fromkeys([c] + [str(n).strip() for n in names.get(c, []) if str(n).strip()]))
            for n in opts:
                if owner.setdefault(n.lower(), c) != c:
                    raise VocabularyError(f"data.label_names: {n!r} is listed for both {owner[n.lower()]!r} and {c!r}")
            self.choices.append(opts)
        self.templates = list(templates or ["{}"])
        for t in self.templates:
            if t.count("{}") != 1:
                raise VocabularyError(f"data.label_templates: {t!r} must contain exactly one {{}} (the label)")
        if not noise >= 0:
            raise VocabularyError(f"data.label_noise: {noise!r} must be a number >= 0 (0 = off)")
        self.seed = seed
        self.noise = float(noise)

    @property
    def varies(self) -> bool:
        return any(len(c) > 1 for c in self.choices) or len(self.templates) > 1 or self.noise > 0

    def draw(self, iteration: int) -> list[str]:
        """The prompt for each class at this iteration: one name and one template per class."""
        rng = np.random.default_rng([self.seed, iteration])
        return [self.templates[rng.integers(len(self.templates))].format(opts[rng.integers(len(opts))])
                for opts in self.choices]

    def prompts(self) -> list[str]:
        """Every string `draw` can return (each class's names under each template), in a fixed order."""
        return [t.format(n) for opts in self.choices for n in opts for t in self.templates]

    def needed(self, class_names: list[str]) -> list[str]:
        """Every string a run with this vocabulary encodes: the class names (validation, the saved model's
        default labels) and every prompt `draw` can return, once each."""
        return list(dict.fromkeys(list(class_names) + self.prompts()))

    def embeddings(self, text_encoder, iteration: int) -> torch.Tensor:
        t = text_encoder.encode(self.draw(iteration))
        if self.noise:
            g = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, iteration, 1]).integers(2**62)))
            t = F.normalize(t + self.noise * torch.randn(t.shape, generator=g) / t.shape[1] ** 0.5, dim=1)
        return t


def load_names(spec) -> dict[str, list[str]] | None:
    """data.label_names: a mapping {class: [names]} or the path of a YAML file holding one."""
    if spec is None or isinstance(spec, dict):
        return spec
    from .config import find_file

    path = find_file(spec)
    if not path.is_file():
        raise VocabularyError(f"data.label_names: {spec} is not a file (a YAML mapping class -> list of names)")
    try:
        data = yamltext.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise VocabularyError(f"data.label_names: {spec} is not readable YAML ({first_line(e)})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise VocabularyError(f"data.label_names: {spec} must map each class name to a list of names")
    return data

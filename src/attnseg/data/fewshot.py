"""Few-shot segmentation benchmarks in the layouts HSNet published (and LSeg evaluates on).

An episode is a query image with a binary mask for one class, plus `shots` support images of the same
class with their masks. Masks: 1 = the class, 0 = anything else, 255 = ignored (VOC borders).

PASCAL-5i (Shaban et al. 2017), folds 0-3 hold classes 5i+1..5i+5 of VOC (1-based):
    ROOT/VOC2012/JPEGImages/NAME.jpg, ROOT/VOC2012/SegmentationClassAug/NAME.png
    SPLITS/pascal/{trn,val}/fold{i}.txt: lines `NAME__CLASS` (CLASS 1-based), as HSNet ships them
COCO-20i (Nguyen & Todorovic 2019, HSNet's interleaved split), fold i holds classes i, i+4, ..., i+76 (0-based):
    ROOT/COCO2014/{train2014,val2014}/NAME.jpg, ROOT/COCO2014/annotations/{train2014,val2014}/NAME.png
    (pixel value = class + 1); SPLITS/coco/{trn,val}/fold{i}.pkl: {class (0-based): [`val2014/NAME.jpg`, ...]}
FSS-1000 (Li et al. 2020), 520/240/240 classes for trn/val/test:
    ROOT/FSS-1000/CLASS/{1..10}.jpg + .png (white = object); SPLITS/fss/{trn,val,test}.txt: class names
Episodes are drawn as HSNet does: episode k takes class `classes[k % len(classes)]` (PASCAL: the k-th
query of the list), a random query of that class, and `shots` other random images of it, all from a
generator seeded per episode, so episode k is the same on every run and machine.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import read_image, read_label
from .datasets import COCO_THINGS, DatasetError, PascalVOC

IGNORE = 255


@dataclass
class Episode:
    query: np.ndarray  # (H, W, 3) uint8
    query_mask: np.ndarray  # (H, W) uint8 in {0, 1, 255}
    supports: list[np.ndarray]
    support_masks: list[np.ndarray]
    class_id: int  # index into the benchmark's class_names
    class_name: str
    query_name: str


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what}: {path} not found (see the layout in attnseg.data.fewshot's docstring)")
    return path


class FewShotBenchmark:
    name = "fewshot"
    class_names: list[str]  # all classes of the benchmark
    classes: list[int]  # the classes of this fold/split (indices into class_names)

    def __init__(self, root, splits, fold: int, split: str, shots: int = 1, episodes: int = 1000, seed: int = 0):
        self.root, self.splits = Path(root), Path(splits)
        self.fold, self.split, self.shots, self.episodes, self.seed = fold, split, shots, episodes, seed
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        self.by_class: dict[int, list[str]] = {}
        self.queries: list[tuple[str, int]] = []
        self.load_split()
        small = [self.class_names[c] for c in self.classes if len(self.by_class.get(c, [])) < shots + 1]
        if small:
            raise DatasetError(f"{self.name} fold {fold} {split}: classes {small} have fewer than shots + 1 = "
                               f"{shots + 1} images, so no episode can be drawn")

    def load_split(self) -> None:
        raise NotImplementedError

    def read(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.episodes

    def pick(self, k: int, rng: np.random.Generator) -> tuple[str, int]:
        c = self.classes[k % len(self.classes)]
        return self.by_class[c][rng.integers(len(self.by_class[c]))], c

    def __getitem__(self, k: int) -> Episode:
        if not 0 <= k < self.episodes:
            raise IndexError(k)
        rng = np.random.default_rng([self.seed, self.fold, k])
        qname, c = self.pick(k, rng)
        others = [n for n in self.by_class[c] if n != qname]
        snames = [others[i] for i in rng.choice(len(others), self.shots, replace=False)]
        q, qm = self.read(qname, c)
        sup = [self.read(n, c) for n in snames]
        return Episode(q, qm, [s[0] for s in sup], [s[1] for s in sup], c, self.class_names[c], qname)


class Pascal5i(FewShotBenchmark):
    name = "pascal5i"
    class_names = list(PascalVOC.CLASSES[1:])  # 20 classes, index = VOC id - 1

    def load_split(self):
        if not 0 <= self.fold <= 3:
            raise ValueError(f"PASCAL-5i folds are 0..3, got {self.fold}")
        self.classes = list(range(5 * self.fold, 5 * self.fold + 5))
        lst = _require(self.splits / "pascal" / self.split / f"fold{self.fold}.txt", "PASCAL-5i split list")
        for line in lst.read_text().split():
            name, cls = line.rsplit("__", 1)
            c = int(cls) - 1
            if c not in self.classes:
                raise DatasetError(f"{lst}: {line!r} is class {cls}, not a class of fold {self.fold}")
            self.by_class.setdefault(c, []).append(name)
            self.queries.append((name, c))
        self.voc = _require(self.root / "VOC2012", "PASCAL VOC 2012")

    def pick(self, k, rng):  # HSNet walks the query list (wrapping), supports drawn at random
        return self.queries[k % len(self.queries)]

    def read(self, name, c):
        img = read_image(self.voc / "JPEGImages" / f"{name}.jpg")
        lab = read_label(self.voc / "SegmentationClassAug" / f"{name}.png")
        mask = np.where(lab == IGNORE, IGNORE, lab == c + 1).astype(np.uint8)
        return img, mask


class COCO20i(FewShotBenchmark):
    name = "coco20i"
    class_names = list(COCO_THINGS)

    def load_split(self):
        if not 0 <= self.fold <= 3:
            raise ValueError(f"COCO-20i folds are 0..3, got {self.fold}")
        self.classes = [self.fold + 4 * v for v in range(20)]
        pkl = _require(self.splits / "coco" / self.split / f"fold{self.fold}.pkl", "COCO-20i split file")
        with open(pkl, "rb") as f:
            meta = pickle.load(f)
        for c in self.classes:
            self.by_class[c] = list(meta.get(c, []))
        self.coco = _require(self.root / "COCO2014", "COCO 2014")

    def read(self, name, c):
        img = read_image(self.coco / name)
        lab = read_label(self.coco / "annotations" / Path(name).with_suffix(".png"))
        return img, (lab == c + 1).astype(np.uint8)


class FSS1000(FewShotBenchmark):
    name = "fss1000"

    def load_split(self):
        lst = _require(self.splits / "fss" / f"{self.split}.txt", "FSS-1000 split list")
        self.class_names = [s for s in lst.read_text().split("\n") if s.strip()]
        self.classes = list(range(len(self.class_names)))
        self.base = _require(self.root / "FSS-1000", "FSS-1000")
        for c, cname in enumerate(self.class_names):
            d = _require(self.base / cname, f"FSS-1000 class {cname!r}")
            self.by_class[c] = sorted(p.stem for p in d.glob("*.jpg"))

    def read(self, name, c):
        d = self.base / self.class_names[c]
        img = read_image(d / f"{name}.jpg")
        lab = read_image(d / f"{name}.png").max(-1)  # the masks are saved as gray or RGB images
        return img, (lab > 128).astype(np.uint8)

    def label_text(self, c: int) -> str:
        return self.class_names[c].replace("_", " ")


BENCHMARKS = {"pascal5i": Pascal5i, "coco20i": COCO20i, "fss1000": FSS1000}


def build_benchmark(name: str, root, splits, fold: int = 0, split: str = "val", **kw) -> FewShotBenchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown few-shot benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](root, splits, fold, split, **kw)

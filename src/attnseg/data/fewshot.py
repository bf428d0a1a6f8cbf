"""Few-shot segmentation benchmarks in the layouts HSNet published (and LSeg evaluates on), with the
episode schedules, mask reading and scoring resolution of HSNet's and LSeg's own evaluation code.

An episode is a query image with a binary mask for one class, plus `shots` support images of the same
class with their masks. Masks: 1 = the class, 0 = anything else, 255 = ignored (VOC borders).

PASCAL-5i (Shaban et al. 2017), folds 0-3 hold classes 5i+1..5i+5 of VOC (1-based):
    ROOT/VOC2012/JPEGImages/NAME.jpg, ROOT/VOC2012/SegmentationClassAug/NAME.png
    SPLITS/pascal/{trn,val}/fold{i}.txt: lines `NAME__CLASS` (CLASS 1-based), as HSNet ships them
COCO-20i (Nguyen & Todorovic 2019, HSNet's interleaved split), fold i holds classes i, i+4, ..., i+76 (0-based):
    ROOT/COCO2014/{train2014,val2014}/NAME.jpg, ROOT/COCO2014/annotations/{train2014,val2014}/NAME.png
    (pixel value = class + 1); SPLITS/coco/{trn,val}/fold{i}.pkl: {class (0-based): [`val2014/NAME.jpg`, ...]}
FSS-1000 (Li et al. 2020), 520/240/240 classes for trn/val/test:
    ROOT/FSS-1000/CLASS/{1..10}.jpg + .png (object where the grey value >= 128); SPLITS/fss/{trn,val,test}.txt

Protocols (`protocol=`), facts from HSNet's `data/*.py`, `test.py`, `common/logger.py` and lang-seg's
`fewshot_data/` copies and `test_lseg_zs.py`; both draw episodes from one legacy NumPy RandomState seeded
with `seed` (their `fix_randseed(0)`), with the same calls in the same order, so seed 0 gives their episodes:
    "lseg" (default, LSeg's tables): images and masks resized to 480x480 (masks nearest) and scored there;
        PASCAL: 1000 episodes walking the fold's list and wrapping around it (`__len__` 1000, `idx %= n`);
        COCO: 1000 episodes, each a random class, then a random query of it; FSS-1000 1-shot on `test`:
        every image but the first of each class (in sorted path order) as the query, once, with that first
        image as the support (240 classes x 9 = 2,160 episodes).
    "hsnet": the same at 400x400 (HSNet's test size); FSS-1000: every image of each class once as the query
        (2,400 on test), random supports (never the query).
Both read FSS-1000 masks as `convert('L') >= 128` and count a fold class that no episode drew as IoU 0.
Images and masks are read as stored (no EXIF rotation), as both references read them.
`score_size=None` scores at the original mask size instead (HSNet's --use_original_imgsize).

Label words (`label_text(c, words)`), what a zero-shot model is given for class c:
    "lseg": LSeg's zero-shot net (`modules/models/lseg_net_zs.py`) tokenises ["others", label_list[class_id]]
        with label_list read from lang-seg's `label_files/fewshot_{coco,fss}.txt` (shipped in
        `attnseg/data/lseg_labels/`): COCO's 80 words as written there (`motorbike`, `trafficlight`, ...),
        FSS-1000's 1000 names with their underscores, indexed as LSeg indexes them (class id + 520 on val,
        + 760 on test). lang-seg's release has no PASCAL label file: PASCAL gets VOC's own class names.
    "readable": VOC's names, COCO's names with spaces (`traffic light`), FSS-1000's with spaces; "other".
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ..io import read_image, read_label
from .datasets import COCO_THINGS, DatasetError, PascalVOC

IGNORE = 255
PROTOCOLS = {"lseg": {"size": 480, "words": "lseg"}, "hsnet": {"size": 400, "words": "readable"}}
LABEL_WORDS = ("lseg", "readable")
BACKGROUND = {"lseg": "others", "readable": "other"}  # LSeg's zero-shot net: ['others', label]
DEFAULT_SPLIT = {"pascal5i": "val", "coco20i": "val", "fss1000": "test"}  # what LSeg and HSNet test on
LSEG_LABELS = Path(__file__).parent / "lseg_labels"


def lseg_label_list(name: str) -> list[str]:
    """lang-seg's label_files/fewshot_{name}.txt, line by line (`line.strip()`, as its get_labels reads it)."""
    return [line.strip() for line in (LSEG_LABELS / f"fewshot_{name}.txt").read_text().splitlines()]


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


def _draw(rs: np.random.RandomState, seq) -> object:
    """One draw as the references make it: `np.random.choice(seq, 1, replace=False)[0]` (same stream use)."""
    return rs.choice(seq, 1, replace=False)[0]


class FewShotBenchmark:
    name = "fewshot"
    class_names: list[str]  # all classes of the benchmark
    classes: list[int]  # the classes of this fold/split (indices into class_names)

    def __init__(self, root, splits, fold: int, split: str, shots: int = 1, episodes: int | None = None,
                 seed: int = 0, protocol: str = "lseg"):
        self.root, self.splits = Path(root), Path(splits)
        self.fold, self.split, self.shots, self.seed = fold, split, shots, seed
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        if episodes is not None and episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        self.protocol = protocol
        self.score_size: int | None = PROTOCOLS[protocol]["size"]
        self.by_class: dict[int, list[str]] = {}
        self.queries: list[tuple[str, int]] = []
        self.load_split()
        small = [self.class_names[c] for c in self.classes if 0 < len(self.by_class.get(c, [])) < shots + 1]
        if small:
            raise DatasetError(f"{self.name} fold {fold} {split}: classes {small} have fewer than shots + 1 = "
                               f"{shots + 1} images, so no episode can be drawn")
        self.plan = self.schedule(np.random.RandomState(seed), episodes)

    def load_split(self) -> None:
        raise NotImplementedError

    def read(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def schedule(self, rs: np.random.RandomState, episodes: int | None) -> list[tuple[str, list[str], int]]:
        """[(query, supports, class)] for every episode, drawn in the references' order."""
        raise NotImplementedError

    def _supports(self, rs, query: str, pool) -> list[str]:
        out = []
        while len(out) < self.shots:  # the references redraw while the draw is the query
            s = str(_draw(rs, pool))
            if s != query:
                out.append(s)
        return out

    def __len__(self) -> int:
        return len(self.plan)

    def label_text(self, c: int, words: str = "readable") -> str:
        """The text a zero-shot model gets for class c (see the module docstring's label words)."""
        if words not in LABEL_WORDS:
            raise ValueError(f"label words must be one of {', '.join(LABEL_WORDS)}, got {words!r}")
        return self.class_names[c]

    def __getitem__(self, k: int) -> Episode:
        if not 0 <= k < len(self.plan):
            raise IndexError(k)
        qname, snames, c = self.plan[k]
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

    def schedule(self, rs, episodes):
        n = len(self.queries)  # HSNet and LSeg: 1000 episodes walking the list, wrapping (idx %= n)
        count = episodes or 1000
        plan = []
        for k in range(count):
            q, c = self.queries[k % n]
            plan.append((q, self._supports(rs, q, self.by_class[c]), c))
        return plan

    def read(self, name, c):
        img = read_image(self.voc / "JPEGImages" / f"{name}.jpg", orient=False)
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

    def schedule(self, rs, episodes):  # a random class per episode, then a random query of that class
        empty = [self.class_names[c] for c in self.classes if not self.by_class[c]]
        if empty:
            raise DatasetError(f"coco20i fold {self.fold}: no images listed for classes {empty}")
        plan = []
        for _ in range(episodes or 1000):
            c = int(_draw(rs, self.classes))
            q = str(_draw(rs, self.by_class[c]))
            plan.append((q, self._supports(rs, q, self.by_class[c]), c))
        return plan

    def label_text(self, c: int, words: str = "readable") -> str:
        super().label_text(c, words)
        return lseg_label_list("coco")[c] if words == "lseg" else self.class_names[c]

    def read(self, name, c):
        img = read_image(self.coco / name, orient=False)
        lab = read_label(self.coco / "annotations" / Path(name).with_suffix(".png"))
        return img, (lab == c + 1).astype(np.uint8)


class FSS1000(FewShotBenchmark):
    name = "fss1000"

    def load_split(self):
        lst = _require(self.splits / "fss" / f"{self.split}.txt", "FSS-1000 split list")
        self.class_names = sorted(s for s in lst.read_text().split("\n") if s.strip())  # the references sort
        self.classes = list(range(len(self.class_names)))
        self.base = _require(self.root / "FSS-1000", "FSS-1000")
        for c, cname in enumerate(self.class_names):
            d = _require(self.base / cname, f"FSS-1000 class {cname!r}")
            files = sorted(p.name for p in d.iterdir())  # sorted path order: 1.jpg, 1.png, 10.jpg, 2.jpg, ...
            self.files[c] = files
            self.by_class[c] = [f[:-4] for f in files if f.endswith(".jpg")]

    def __init__(self, *a, **kw):
        self.files: dict[int, list[str]] = {}
        super().__init__(*a, **kw)

    def schedule(self, rs, episodes):
        plan = []
        fixed_support = self.protocol == "lseg" and self.split == "test" and self.shots == 1
        for c in self.classes:
            names = self.files[c][1:] if fixed_support else self.files[c]  # LSeg: the first file is the support
            for f in names:
                if not f.endswith(".jpg"):
                    continue
                q = f[:-4]
                if fixed_support:
                    plan.append((q, ["1"], c))
                else:  # HSNet: supports drawn from the names 1..10, never the query
                    plan.append((q, self._supports(rs, q, range(1, 11)), c))
        return plan[:episodes] if episodes else plan

    def read(self, name, c):
        d = self.base / self.class_names[c]
        img = read_image(d / f"{name}.jpg", orient=False)
        return img, (read_grey(d / f"{name}.png") >= 128).astype(np.uint8)

    OFFSET = {"trn": 0, "val": 520, "test": 760}  # LSeg's class id: index in the sorted split + this

    def label_text(self, c: int, words: str = "readable") -> str:
        super().label_text(c, words)
        if words == "lseg":
            return lseg_label_list("fss")[self.OFFSET.get(self.split, 0) + c]
        return self.class_names[c].replace("_", " ")


def read_grey(path) -> np.ndarray:
    """A mask as the references read it: Pillow's `convert('L')` (ITU-R 601 luma of RGB), uint8."""
    from ..io import ImageReadError, open_image

    im = open_image(path, str(path), None, what="mask")
    try:
        with im:
            return np.asarray(im.convert("L"))
    except (OSError, ValueError) as e:
        raise ImageReadError(f"cannot read mask {path}: {e}") from None


BENCHMARKS = {"pascal5i": Pascal5i, "coco20i": COCO20i, "fss1000": FSS1000}


def build_benchmark(name: str, root, splits, fold: int = 0, split: str = "val", **kw) -> FewShotBenchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown few-shot benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](root, splits, fold, split, **kw)

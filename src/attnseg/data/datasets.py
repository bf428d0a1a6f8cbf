"""Datasets, one class per dataset, each reading the folder layout as published.

A dataset lists (image, label) file pairs, maps raw label values to train ids (ignore = 255), and
checks every label map as it loads: values outside [0, num_classes) other than the ignore index are
an error naming the file and the values, and so is an image/label size mismatch.
`__getitem__` takes an index or (index, seed); the seed drives the sample's augmentation.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io import IMAGE_EXTENSIONS, ImageReadError, default_palette, read_image, read_label

IGNORE_INDEX = 255


class DatasetError(ValueError):
    pass


class SegDataset(Dataset):
    CLASSES: tuple[str, ...] = ()
    PALETTE: list[list[int]] | None = None

    def __init__(self, root: str | os.PathLike, split: str = "train", transform=None, check_labels: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{type(self).__name__}: data root {self.root} does not exist")
        self.split = split
        self.transform = transform
        self.check_labels = check_labels
        self.samples = self.list_samples()
        if not self.samples:
            raise DatasetError(f"{type(self).__name__}: no samples for split {split!r} under {self.root}")

    # -- to implement per dataset ------------------------------------------------------------
    def list_samples(self) -> list[tuple[Path, Path | None]]:
        raise NotImplementedError

    def map_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return raw

    # -- shared ----------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    @property
    def class_names(self) -> list[str]:
        return list(self.CLASSES)

    @property
    def palette(self) -> list[list[int]]:
        return self.PALETTE or default_palette(self.num_classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        img_path, lab_path = self.samples[i]
        img = read_image(img_path, orient=False)  # as stored, like its label map
        if lab_path is None:
            return img, None
        lab = self.map_label(read_label(lab_path), lab_path)
        if lab.shape != img.shape[:2]:
            raise DatasetError(f"size mismatch: image {img_path} is {img.shape[1]}x{img.shape[0]} but label "
                               f"{lab_path} is {lab.shape[1]}x{lab.shape[0]}")
        if self.check_labels:
            bad = np.unique(lab[(lab != IGNORE_INDEX) & ((lab < 0) | (lab >= self.num_classes))])
            if bad.size:
                raise DatasetError(
                    f"label map {lab_path} has values {bad[:10].tolist()} outside [0, {self.num_classes}) "
                    f"(ignore index {IGNORE_INDEX}); check the dataset/num_classes, or convert the labels "
                    "(e.g. reduce_zero_label for ADE20K-style files)")
        return img, lab

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        img, lab = self.load(i)
        if self.transform is not None:
            rng = np.random.default_rng(seed)
            img, lab = self.transform(img, lab, rng)
        out = {"image": torch.from_numpy(np.require(img, requirements=["C", "W"])).permute(2, 0, 1),
               "name": self.samples[i][0].stem, "index": i}
        if lab is not None:
            out["label"] = torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))
        return out


def _pairs_from_list(root: Path, list_file: Path) -> list[tuple[Path, Path]]:
    """`IMAGE LABEL` lines relative to root; absolute paths from elsewhere resolve by their last two parts."""
    def resolve(p: str) -> Path:
        q = Path(p)
        if q.is_absolute() and not q.exists():
            q = Path(*q.parts[-2:])
        return q if q.is_absolute() else root / q

    out = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{list_file}:{n}: expected 'IMAGE LABEL', got {line!r}")
        out.append((resolve(parts[0]), resolve(parts[1])))
    return out


class CamVid(SegDataset):
    """CamVid, SegNet layout: train.txt/val.txt/test.txt with `image label` lines; 11 classes, 11 = void."""

    CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
               "pedestrian", "bicyclist")
    PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
               [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]

    def list_samples(self):
        f = self.root / f"{self.split}.txt"
        if not f.is_file():
            raise DatasetError(f"CamVid: split list {f} not found (expected train.txt/val.txt/test.txt in {self.root})")
        return _pairs_from_list(self.root, f)

    def map_label(self, raw, path):
        raw = raw.copy()
        raw[raw == 11] = IGNORE_INDEX
        return raw


ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")


def _matching_pairs(img_dir: Path, lab_dir: Path, lab_suffix: str = ".png", img_exts=IMAGE_EXTENSIONS,
                    strip: str = "", lab_tail: str = "") -> list[tuple[Path, Path]]:
    if not img_dir.is_dir():
        raise DatasetError(f"image folder {img_dir} not found")
    out = []
    for p in sorted(img_dir.rglob("*")):
        if p.suffix.lower() in img_exts and p.is_file():
            stem = p.stem[: -len(strip)] if strip and p.stem.endswith(strip) else p.stem
            rel = p.parent.relative_to(img_dir)
            out.append((p, lab_dir / rel / f"{stem}{lab_tail}{lab_suffix}"))
    return out


class ADE20K(SegDataset):
    """ADEChallengeData2016: images/{training,validation}, annotations/...; 0 = other -> ignore (reduce_zero_label)."""

    CLASSES = ADE20K_CLASSES
    SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

    def list_samples(self):
        sub = self.SPLITS.get(self.split, self.split)
        img_dir, lab_dir = self.root / "images" / sub, self.root / "annotations" / sub
        if not img_dir.is_dir() and (self.root / "images").is_dir():  # a flat sample folder
            img_dir, lab_dir = self.root / "images", self.root / "annotations"
        return _matching_pairs(img_dir, lab_dir)

    def map_label(self, raw, path):  # reduce_zero_label: 0 -> ignore, v -> v - 1
        lab = raw - 1
        lab[raw == 0] = IGNORE_INDEX
        return lab


CITYSCAPES_LABELID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                                 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class Cityscapes(SegDataset):
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png with gtFine/...*_gtFine_labelTrainIds.png (or _labelIds.png)."""

    CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
               "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
               "bicycle")
    PALETTE = [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
               [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
               [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32]]
    _LUT = np.full(256, IGNORE_INDEX, np.int64)
    for _k, _v in CITYSCAPES_LABELID_TO_TRAINID.items():
        _LUT[_k] = _v

    def list_samples(self):
        pairs = _matching_pairs(self.root / "leftImg8bit" / self.split, self.root / "gtFine" / self.split,
                                strip="_leftImg8bit", lab_tail="_gtFine_labelTrainIds")
        out = []
        for img, lab in pairs:
            if not lab.exists():  # convert from labelIds on the fly
                lab = lab.with_name(lab.name.replace("_labelTrainIds", "_labelIds"))
            out.append((img, lab))
        return out

    def map_label(self, raw, path):
        return self._LUT[np.clip(raw, 0, 255)] if path.name.endswith("_labelIds.png") else raw


def _voc_palette(n: int = 256) -> list[list[int]]:
    out = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


class PascalVOC(SegDataset):
    """VOC2012: JPEGImages + SegmentationClass, ImageSets/Segmentation/{split}.txt; split 'aug' (SBD,
    train_aug.txt) reads SegmentationClassAug. Border pixels (255) are ignored."""

    CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
    PALETTE = _voc_palette(21)

    def list_samples(self):
        aug = self.split in ("aug", "train_aug")
        lst = self.root / "ImageSets" / "Segmentation" / ("train_aug.txt" if aug else f"{self.split}.txt")
        if not lst.is_file():
            raise DatasetError(f"PascalVOC: split list {lst} not found")
        lab_dir = self.root / ("SegmentationClassAug" if aug else "SegmentationClass")
        ids = [s.split()[0] for s in lst.read_text().split("\n") if s.strip()]
        return [(self.root / "JPEGImages" / f"{i}.jpg", lab_dir / f"{i}.png") for i in ids]


PASCAL_CONTEXT_59 = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door",
    "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain",
    "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window",
    "wood")


class PascalContext(SegDataset):
    """PASCAL Context (60 classes incl. background), detail-API PNG export: VOC2010/JPEGImages,
    SegmentationClassContext/*.png (0 = background), ImageSets/SegmentationContext/{train,val}.txt."""

    CLASSES = ("background",) + PASCAL_CONTEXT_59

    def list_samples(self):
        lst = self.root / "ImageSets" / "SegmentationContext" / f"{self.split}.txt"
        if not lst.is_file():
            raise DatasetError(f"PascalContext: split list {lst} not found")
        ids = [s.strip() for s in lst.read_text().split("\n") if s.strip()]
        return [(self.root / "JPEGImages" / f"{i}.jpg", self.root / "SegmentationClassContext" / f"{i}.png")
                for i in ids]


class PascalContext59(PascalContext):
    """PASCAL Context 59: background is ignored (reduce_zero_label)."""

    CLASSES = PASCAL_CONTEXT_59

    def map_label(self, raw, path):
        lab = raw - 1
        lab[raw == 0] = IGNORE_INDEX
        return lab


COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush")
COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel",
    "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood")
# 0-based stuffthingmaps ids never used by COCO (11 thing ids), the rest map to 0..170 in order
COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


class COCOStuff164k(SegDataset):
    """COCO-Stuff 164k: images/{train2017,val2017}, annotations/{...}/*.png: either stuffthingmaps (0..181,
    255 unlabeled; mapped to 171 train ids) or mmseg's converted *_labelTrainIds.png."""

    CLASSES = COCO_THINGS + COCO_STUFF
    _LUT = np.full(256, IGNORE_INDEX, np.int64)
    _LUT[[i for i in range(182) if i not in COCO_UNUSED_IDS]] = np.arange(171)

    def list_samples(self):
        sub = {"train": "train2017", "val": "val2017"}.get(self.split, self.split)
        pairs = _matching_pairs(self.root / "images" / sub, self.root / "annotations" / sub,
                                lab_tail="_labelTrainIds")
        return [(i, l if l.exists() else l.with_name(l.name.replace("_labelTrainIds", ""))) for i, l in pairs]

    def map_label(self, raw, path):
        return raw if path.name.endswith("_labelTrainIds.png") else self._LUT[np.clip(raw, 0, 255)]


class FolderDataset(SegDataset):
    """Your own data: root/images/[split/]*.jpg|png, root/masks/[split/]<same stem>.png (class indices,
    255 = ignore), root/classes.txt (one class name per line; optional `name r g b` for the palette)."""

    def __init__(self, root, split="train", transform=None, check_labels=True):
        root = Path(root)
        cf = root / "classes.txt"
        if not cf.is_file():
            raise DatasetError(f"FolderDataset: {cf} not found (one class name per line)")
        names, pal = [], []
        for line in cf.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=3)
            if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
                names.append(parts[0])
                pal.append([int(p) for p in parts[1:]])
            else:
                names.append(line.strip())
        self.CLASSES = tuple(names)
        self.PALETTE = pal if len(pal) == len(names) else None
        super().__init__(root, split, transform, check_labels)

    def list_samples(self):
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        if (img_dir / self.split).is_dir():
            img_dir, mask_dir = img_dir / self.split, mask_dir / self.split
        return _matching_pairs(img_dir, mask_dir)


DATASETS = {"camvid": CamVid, "ade20k": ADE20K, "cityscapes": Cityscapes, "voc": PascalVOC,
            "pascal_context": PascalContext, "pascal_context59": PascalContext59, "coco_stuff164k": COCOStuff164k,
            "folder": FolderDataset}


DATA_ENV = "ATTNSEG_DATA"  # a folder holding one folder per dataset, named as DATASETS names them (camvid/, ...)


def resolve_root(name: str, root) -> Path:
    """The folder of dataset `name`: `root` when given, else $ATTNSEG_DATA/NAME; a DatasetError saying how to pass
    one when neither is there."""
    if root is not None and str(root) != "":
        return Path(root)
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env) / name
    raise DatasetError(f"no folder given for dataset {name!r}: pass --data-root DIR (data.root in a training "
                       f"config), or set {DATA_ENV} to the folder that holds {name}/")


def build_dataset(name: str, root, split: str, transform=None, check_labels: bool = True) -> SegDataset:
    """Dataset `name` (one of DATASETS) at `root` (None: $ATTNSEG_DATA/NAME), split `split`."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    ds = DATASETS[name](resolve_root(name, root), split, transform, check_labels)
    missing = [str(lab) for _, lab in ds.samples[:50] if lab is not None and not lab.exists()]
    if missing:
        raise DatasetError(f"{name}: label file(s) missing, e.g. {missing[0]} ({len(missing)} of the first 50)")
    return ds

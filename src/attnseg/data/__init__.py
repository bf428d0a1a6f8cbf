"""Datasets and joint transforms."""
from .datasets import DATASETS, IGNORE_INDEX, DatasetError, SegDataset, build_dataset  # noqa: F401
from .transforms import EvalTransform, TrainTransform  # noqa: F401

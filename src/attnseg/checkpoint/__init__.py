"""Checkpoints: where they come from (`sources`), how their bytes are read safely (`files`), the formats
attnseg converts (`formats/`, one module each), loading (`load`) and saving (`save`)."""
from .files import ModelLoadError, identify_checkpoint
from .load import Checkpoint, load_model, read_checkpoint
from .save import save_model
from .sources import resolve_source

__all__ = ["Checkpoint", "ModelLoadError", "identify_checkpoint", "load_model", "read_checkpoint",
           "resolve_source", "save_model"]

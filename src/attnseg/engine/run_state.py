"""Training checkpoints: written atomically (temp file + fsync + rename, so a kill at any moment leaves
the previous `latest.pth` intact) and read back without unpickling code.

`latest.pth` holds only tensors and plain containers (the numpy RNG state is stored as a tensor), so
`--resume` loads it with `torch.load(weights_only=True)`: a file carrying a pickle payload is refused
before anything in it runs. Checkpoints written by earlier attnseg versions pickled the numpy RNG state
as an ndarray; the array reconstructor (data only) is allow-listed for them, nothing else.
"""
from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write, remove_stale_temps


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    def write(tmp):
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())

    atomic_write(path, write)


def remove_stale_checkpoint_temps(work_dir: str | os.PathLike) -> list[Path]:
    """Temp files of checkpoint writes interrupted by a kill (`.latest.pth.XXXX.tmp`, `.best.safetensors...`)."""
    removed = []
    for name in ("latest.pth", "best.safetensors", "final.safetensors", "config.yaml"):
        removed += remove_stale_temps(work_dir, name)
    return removed


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "gauss": float(gauss)},
          "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    else:  # older checkpoints: the tuple np.random.get_state() returns
        np.random.set_state(n)
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _numpy_data_globals() -> list:
    """What an ndarray / numpy scalar needs to unpickle (data only, no callables of the file's choosing)."""
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray._reconstruct, np.ndarray, np.dtype, core.multiarray.scalar]
    out += [type(np.dtype(t)) for t in ("uint32", "int64", "float64", "float32", "int32", "bool")]
    return out


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint without running code from it; ValueError (one line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        raise ValueError(f"refusing to resume from {path}: it pickles Python objects besides tensors "
                         f"(global {found.group(1) if found else '?'}); attnseg does not run code from checkpoint "
                         "files. Start the run again without --resume.") from None
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         " (truncated or not an attnseg training checkpoint)") from None
    missing = {"model", "optimizer", "scheduler", "iter", "rng"} - set(ck) if isinstance(ck, dict) else {"model"}
    if missing:
        raise ValueError(f"{path} is not an attnseg training checkpoint (missing {', '.join(sorted(missing))})")
    return ck

"""Checkpoint files read safely: identified by their bytes, checked against their size, and read without
running code a file carries (safetensors, or torch.load with weights_only=True)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


class ModelLoadError(ValueError):
    """A checkpoint or source that cannot be loaded; the message is one line naming it and the fix."""


ACCEPTED_FORMATS = ("safetensors (.safetensors), a PyTorch state dict saved with torch.save (.pth/.pt/.bin/.ckpt: a "
                    "zip archive), or a folder with a transformers config.json")
MAX_SAFETENSORS_HEADER = 100 * 2**20  # the JSON index of a safetensors file; real ones are a few hundred KB


def identify_checkpoint(path: Path) -> str:
    """'safetensors', 'zip' (torch.save) or 'pickle' (torch.save's legacy format), read from the file's first bytes
    and checked against its size; anything else raises ModelLoadError saying what the file is not. Nothing is
    unpickled here."""
    import zipfile

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) == 8:
                n = int.from_bytes(head, "little")
                first = f.read(1)
                if first == b"{":  # safetensors: u64 header length, then a JSON object
                    return _check_safetensors(path, f, n, size)
    except OSError as e:
        raise ModelLoadError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if head[:4] == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path} is not a complete checkpoint: it starts as a zip archive (torch.save) but "
                                 "has no zip directory at its end (truncated by an interrupted copy or download?)")
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    what = (f"not a safetensors file (its header length {int.from_bytes(head, 'little'):,} exceeds the file size "
            f"{size:,})" if len(head) == 8 and int.from_bytes(head, 'little') > size else "not a safetensors file")
    raise ModelLoadError(f"{path} is not a checkpoint attnseg can read: {what}, and not a zip or pickle PyTorch "
                         f"checkpoint ({size:,} bytes of something else). Accepted: {ACCEPTED_FORMATS}")


def _check_safetensors(path: Path, f, n: int, size: int) -> str:
    if n > size - 8:
        raise ModelLoadError(f"{path} is not a complete safetensors file: header length {n:,} exceeds the file size "
                             f"{size:,} (truncated, or not a safetensors file)")
    if n > MAX_SAFETENSORS_HEADER:
        raise ModelLoadError(f"{path}: safetensors header of {n:,} bytes is over the limit of "
                             f"{MAX_SAFETENSORS_HEADER:,}; not a checkpoint attnseg reads")
    f.seek(8)
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{path} is not a valid safetensors file: its {n:,}-byte header is not JSON") from None
    ends = [e["data_offsets"][1] for k, e in header.items()
            if k != "__metadata__" and isinstance(e, dict) and len(e.get("data_offsets") or ()) == 2]
    if not isinstance(header, dict) or len(ends) != len([k for k in header if k != "__metadata__"]):
        raise ModelLoadError(f"{path} is not a valid safetensors file: its header does not list tensors")
    data = size - 8 - n
    if ends and max(ends) > data:
        raise ModelLoadError(f"{path} is not a complete safetensors file: its tensors need {max(ends):,} bytes of "
                             f"data, the file holds {data:,} (truncated by an interrupted copy or download?)")
    return "safetensors"


def read_state_dict(path: Path, hparams: dict | None = None) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read tensors (and attnseg metadata if present) from a checkpoint file; a Lightning checkpoint's
    `hyper_parameters` are copied into `hparams` when a dict is passed. The file is identified by its bytes
    first (`identify_checkpoint`); a torch file is read with weights_only=True: nothing of it is unpickled
    beyond tensors and plain containers."""
    kind = identify_checkpoint(path)
    try:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
            return sd, json.loads(meta["attnseg"]) if "attnseg" in meta else None
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        import pickle

        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        if kind != "safetensors" and isinstance(e, pickle.UnpicklingError):
            raise ModelLoadError(
                f"{path} holds Python objects besides tensors (e.g. training state or a pickled model); attnseg reads only weights and plain "
                "data from a PyTorch file and does not run code a file carries. Where the file was made, save the "
                "weights alone (torch.save(model.state_dict(), 'weights.pth') or safetensors) and load that") from None
        raise ModelLoadError(f"cannot read checkpoint {path} ({kind}): {type(e).__name__}: {first} (corrupt or "
                             "truncated?)") from None
    if isinstance(obj, dict) and hparams is not None and isinstance(obj.get("hyper_parameters"), dict):
        hparams.update(obj["hyper_parameters"])
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj), None

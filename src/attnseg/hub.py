"""Loading and saving models: `load_model(source)` and `save_model(model, path)`.

`source` may be
  * a shipped pretrained name (`attnseg.list_pretrained()`), loaded offline from the package;
  * a local file (`.safetensors`, `.pth`, `.pt`, `.bin`, `.ckpt`) or directory;
  * a Hugging Face hub id (`nvidia/segformer-b0-finetuned-ade-512-512`), downloaded when online.
The format is detected from the keys: attnseg's own files (safetensors with a JSON config in the
metadata), official releases (NVlabs/SegFormer, EDAFormer: mmseg-0.x `{'state_dict', 'meta'}`),
transformers checkpoints (a directory with config.json) and mmsegmentation 1.x checkpoints.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .convert import lseg as conv_lseg
from .convert import nonlocal_blocks as conv_nl
from .convert import segformer as conv_segformer
from .convert.keymap import ConversionError, check_against
from .io import atomic_write
from .meta import default_meta, meta_from
from .pretrained import PRETRAINED, PRETRAINED_DIR, list_pretrained  # noqa: F401 (re-exported)
from .models import MODELS, create_model, model_config, unknown_model_error
from .models.mit import MIT_CONFIGS
from .registry import family, same_family

class ModelLoadError(ValueError):
    pass


def save_model(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None = None,
               palette: list[list[int]] | None = None, mean: list[float] | None = None,
               std: list[float] | None = None, dtype: torch.dtype | None = None, extra: dict | None = None,
               short_side: int | None = None) -> Path:
    """Write `model` as one .safetensors file with its config and label metadata (atomically)."""
    from safetensors.torch import save_file

    if not hasattr(model, "variant"):
        raise ValueError("save_model needs a model made by attnseg.create_model/load_model (it records the variant)")
    meta = dict(getattr(model, "meta", None) or default_meta())
    for k, v in (("class_names", class_names), ("palette", palette), ("mean", mean), ("std", std)):
        if v is not None:
            meta[k] = list(v)
    if short_side is not None:  # the short side it was trained/evaluated at: `attnseg predict` runs images there
        meta["short_side"] = int(short_side)
    num_classes = model.config.get("num_classes")
    if meta.get("class_names") and num_classes and len(meta["class_names"]) != num_classes:
        raise ValueError(f"{len(meta['class_names'])} class names for a model with {num_classes} classes")
    info = {"format": "attnseg", "version": 1, "model": model.variant, "config": model.config, **meta,
            **(extra or {})}
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors" if path.is_dir() or not path.suffix else path.with_suffix(".safetensors")
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata={"attnseg": json.dumps(info)}))
    return path


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


def _read_state_dict(path: Path, hparams: dict | None = None) -> tuple[dict[str, torch.Tensor], dict | None]:
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


def _detect_format(sd: dict[str, torch.Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith(("segformer.encoder.", "encoder.patch_embeddings.", "segformer.stages.", "stages.0."))
           for k in keys):
        return "transformers"
    if any(re.match(r"(backbone\.)?layers\.\d+\.0\.projection\.weight", k) for k in keys):
        return "mmseg"
    if conv_nl.is_mmseg_nlnet(sd):
        return "mmseg_nlnet"
    if any(re.match(r"(backbone\.)?patch_embed1\.proj\.weight", k) for k in keys):
        return "official"
    if conv_lseg.is_lseg(sd):
        return "lseg"
    sample = ", ".join(keys[:5])
    raise ModelLoadError(f"unrecognised checkpoint layout (first keys: {sample}). Supported: attnseg, official "
                         "NVlabs/EDAFormer releases, transformers Segformer, mmsegmentation 1.x SegFormer and NLNet, LSeg releases "
                         "(isl-org/lang-seg).")


def _variant_for_hf(hf_config: dict) -> str:
    has_head = "SegformerForSemanticSegmentation" in (hf_config.get("architectures") or [])
    for k, v in MIT_CONFIGS.items():
        if list(hf_config["hidden_sizes"]) == v["embed_dims"] and list(hf_config["depths"]) == v["depths"]:
            return f"{'segformer' if has_head else 'mit'}-{k}"
    return "segformer-b0" if has_head else "mit-b0"


def _load_hf_dir(path: Path) -> tuple[dict, dict, str, dict]:
    hf_config = json.loads((path / "config.json").read_text())
    if hf_config.get("model_type") != "segformer":
        raise ModelLoadError(f"{path}/config.json is a {hf_config.get('model_type')!r} model; attnseg loads "
                             "transformers checkpoints of model_type 'segformer'")
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(f"{path} has config.json but no model.safetensors / pytorch_model.bin")
    sd = {}
    for f in files:
        sd.update(_read_state_dict(f)[0])
    meta = default_meta()
    id2label = hf_config.get("id2label")
    if id2label and not all(re.fullmatch(r"LABEL_\d+", str(v)) for v in id2label.values()):
        meta["class_names"] = [id2label[str(i)] if str(i) in id2label else id2label[i]
                               for i in range(len(id2label))]
    return sd, hf_config, _variant_for_hf(hf_config), meta


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise ModelLoadError("loading from the Hugging Face hub needs `pip install huggingface_hub`") from e
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin"], etag_timeout=10))
    except Exception as e:
        raise ModelLoadError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "The hub is unreachable or the id is wrong. Download the checkpoint on a machine with internet "
            f"(e.g. `huggingface-cli download {repo_id} --local-dir DIR`) and pass the local directory or file: "
            "attnseg.load_model('DIR') / --model DIR.") from e


CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx")


def _looks_like_local_path(src: str) -> bool:
    """A missing local file, not a hub id: a checkpoint suffix, a path form, or a first folder that exists."""
    first = src.split("/")[0]
    return (src.endswith(CHECKPOINT_SUFFIXES) or src.startswith((".", "/", "~")) or src.count("/") > 1
            or os.sep != "/" and os.sep in src or (bool(first) and "/" in src and os.path.isdir(first)))


@dataclass
class Checkpoint:
    """What reading a checkpoint gives, before conversion: tensors, their format and what the file says."""
    path: Path
    sd: dict
    fmt: str  # attnseg | transformers | official | mmseg | mmseg_nlnet | lseg
    variant: str | None = None  # the architecture the file records (None: the caller must name it)
    config: dict = field(default_factory=dict)  # config overrides the file records or its format implies
    meta: dict = field(default_factory=default_meta)
    hf_config: dict | None = None
    hparams: dict = field(default_factory=dict)  # a Lightning checkpoint's hyper_parameters (LSeg)


def load_model(source: str | os.PathLike, model: str | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype | None = None, **overrides) -> nn.Module:
    """Load trained weights into the right architecture; returns the model in eval mode.

    `model=` names the architecture where the checkpoint does not say it (official `.pth` files);
    where it does (attnseg files, transformers config.json) it is optional and checked.
    `num_classes` is inferred from the classifier weight when not given; widths the checkpoint determines
    (decoder widths, LSeg features, NLNet head channels) are read from its tensors. `dtype` builds the
    model in that dtype before loading (float64 keeps a float64 checkpoint exact).
    Steps: resolve the source to a path, read and identify it, name the architecture, convert the tensors to
    ours, build the model and load them strictly.
    """
    if model is not None and model not in MODELS:
        raise unknown_model_error(model)
    ck = read_checkpoint(resolve_source(str(source)))
    variant = _architecture(ck, model)
    _convert_checkpoint(ck, variant, overrides)
    if num_classes is not None and ck.config.get("num_classes", num_classes) != num_classes:
        raise ModelLoadError(f"{ck.path} has {ck.config['num_classes']} classes, but num_classes={num_classes} "
                             "was given; fine-tune from it with --set model.num_classes instead")
    net = _build(ck, variant, overrides, dtype)
    meta = ck.meta
    if meta.get("class_names") and "num_classes" in net.config and len(meta["class_names"]) != net.config["num_classes"]:
        meta["class_names"] = None
    net.meta = meta
    net.source = str(source)
    if hasattr(net, "default_labels") and meta.get("class_names"):
        net.default_labels = list(meta["class_names"])  # LSeg: the label set it was trained with
    return net.to(device).eval()


def resolve_source(src: str) -> Path:
    """A shipped name, a local file or folder, or a hub id -> a local path (hub ids are downloaded)."""
    if src in PRETRAINED:
        path = PRETRAINED_DIR / PRETRAINED[src]
        if not path.is_file():
            raise ModelLoadError(f"pretrained weights {src!r} are registered but {path} is missing from the "
                                 "installation; reinstall attnseg")
        return path
    if os.path.exists(src):
        return Path(src)
    if src in MODELS:
        raise ModelLoadError(f"{src!r} is an architecture with no shipped weights. Use attnseg.create_model("
                             f"{src!r}) for random weights, or pass a checkpoint: load_model(PATH, model={src!r}). "
                             f"Shipped weights: {', '.join(list_pretrained()) or 'none'}")
    if _looks_like_local_path(src):
        raise ModelLoadError(f"checkpoint not found: {src} (no such file or folder; a hub id looks like org/name)")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.startswith((".", "/")):
        return _from_hub(src)
    raise ModelLoadError(f"{src!r} is not a file, a directory, a shipped model name "
                         f"({', '.join(list_pretrained()) or 'none shipped'}) or a hub id (org/name)")


def read_checkpoint(path: Path) -> Checkpoint:
    """Read the tensors and identify the format (a folder: transformers' config.json, or its first checkpoint)."""
    if path.is_dir():
        if (path / "config.json").is_file():
            sd, hf_config, variant, meta = _load_hf_dir(path)
            return Checkpoint(path, sd, "transformers", variant, meta=meta, hf_config=hf_config)
        cands = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth")) + sorted(path.glob("*.pt"))
        if not cands:
            raise ModelLoadError(f"directory {path} holds no checkpoint (*.safetensors, *.pth, config.json)")
        path = cands[0]
    hparams: dict = {}
    sd, info = _read_state_dict(path, hparams)
    if info is not None:
        variant = info["model"]
        upgrade = family(variant).upgrade if variant in MODELS else None  # saved before today's options existed
        config = upgrade(dict(info["config"])) if upgrade else dict(info["config"])
        return Checkpoint(path, sd, "attnseg", variant, config, meta_from(info), hparams=hparams)
    ck = Checkpoint(path, sd, _detect_format(sd), hparams=hparams)
    if ck.fmt == "lseg":
        try:
            ck.variant = conv_lseg.detect_variant(sd, hparams)
        except ConversionError as e:
            raise ModelLoadError(str(e)) from None
        ck.meta.update(mean=[127.5] * 3, std=[127.5] * 3)  # the release normalises to [-1, 1]
    return ck


def _architecture(ck: Checkpoint, model: str | None) -> str:
    """The variant to build: the file's, checked against `model=`, or `model=` where the file records none."""
    if ck.variant is not None and model is not None and not same_family(model, ck.variant):
        raise ModelLoadError(f"{ck.path} holds a {ck.variant} model, but model={model!r} was given")
    variant = ck.variant if (model is None or ck.fmt == "attnseg") else model
    if variant is None:
        raise ModelLoadError(f"{ck.path} is a {ck.fmt} checkpoint that does not record its architecture; name it, "
                             "e.g. load_model(path, model='segformer-b2') or --arch segformer-b2 "
                             f"(architectures: {', '.join(n for n in MODELS if not n.endswith('tiny'))})")
    if variant not in MODELS:
        raise unknown_model_error(variant)
    return variant


def _convert_checkpoint(ck: Checkpoint, variant: str, overrides: dict) -> None:
    """Foreign tensors -> our names, and the config their shapes imply (attnseg files need nothing)."""
    if ck.fmt == "attnseg":
        return
    if ck.fmt == "lseg":
        try:
            ck.sd, ck.config = conv_lseg.from_official(ck.sd, ck.hparams, overrides)
        except ConversionError as e:
            raise ModelLoadError(str(e)) from None
        return
    ck.sd, ck.config = _convert(ck.sd, ck.fmt, variant, ck.hf_config)
    inferred = _infer_num_classes(ck.sd)
    if inferred is not None:
        ck.config["num_classes"] = inferred


def _build(ck: Checkpoint, variant: str, overrides: dict, dtype) -> nn.Module:
    """The model the checkpoint describes, its tensors loaded strictly (every key named on a mismatch)."""
    cfg_over = {**ck.config, **overrides}
    config = model_config(variant, **cfg_over)  # the config as the file records it
    net = create_model(variant, **_without_imagenet_weights(config, cfg_over))
    net.config = config
    if dtype is not None:  # e.g. float64 for parity checks: the file's tensors are copied in without rounding
        net = net.to(dtype)
    try:
        check_against(ck.sd, net.state_dict(), f"{ck.fmt} checkpoint {ck.path}")
    except ConversionError as e:
        raise ModelLoadError(str(e)) from None
    net.load_state_dict(ck.sd, strict=True)
    return net


def _without_imagenet_weights(config: dict, cfg: dict) -> dict:
    """`cfg` with the backbone built without reading its packaged ImageNet weights (`config`: the full
    config it gives): the checkpoint holds every weight, so loading is faster, and a trained model loads
    without the package that ships them."""
    backbone = config.get("backbone")
    if not isinstance(backbone, str) or backbone not in MODELS or "pretrained" not in model_config(backbone):
        return cfg
    return {**cfg, "backbone_options": {**(config.get("backbone_options") or {}), "pretrained": False}}


CONVERTERS = {  # (family, format) -> converter; "official" layouts are our own names
    ("segformer", "transformers"): conv_segformer.from_transformers, ("mit", "transformers"): conv_segformer.from_transformers,
    ("segformer", "mmseg"): conv_segformer.from_mmseg, ("mit", "mmseg"): conv_segformer.from_mmseg,
    ("nlnet", "mmseg_nlnet"): conv_nl.from_mmseg_nlnet,
}


def _convert(sd: dict, fmt: str, variant: str, hf_config: dict | None = None) -> tuple[dict, dict]:
    """Foreign state dict -> (our names, config overrides the format implies)."""
    fam = family(variant)
    fn = CONVERTERS.get((fam.name, fmt))
    if fn is None and fmt != "official":
        raise ModelLoadError(f"a {fmt} checkpoint cannot be loaded into {variant}: no converter for that pair")
    try:
        if fn is conv_segformer.from_transformers:
            out, cfg, has_head = fn(sd, hf_config)
        elif fn is not None:
            out, cfg, has_head = fn(sd)
        else:
            out, cfg, has_head = conv_segformer.from_official(sd)
    except ConversionError as e:
        raise ModelLoadError(str(e)) from None
    if fam.kind != "encoder":  # widths from the tensors (the variant names depth and family only)
        cfg = {**conv_segformer.head_widths(out), **cfg}
    if fam.kind == "encoder":
        if has_head:  # a full segmentation checkpoint loaded as an encoder: keep the backbone
            out = {k: v for k, v in out.items() if k.startswith("backbone.")}
        out = {k.removeprefix("backbone."): v for k, v in out.items()}
        cfg.pop("decoder_dim", None)
    elif not any(k.startswith("backbone.") for k in out):
        raise ModelLoadError(f"checkpoint is an encoder only (no decode head); load it with the encoder variant "
                             f"or start training a {variant} from it")
    return out, cfg


def _infer_num_classes(sd: dict) -> int | None:
    w = sd.get("decode_head.linear_pred.weight", sd.get("decode_head.cls.weight"))
    return int(w.shape[0]) if w is not None else None

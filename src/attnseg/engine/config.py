"""Typed experiment configs: dataclass defaults, YAML files as overrides, `--set a.b=value` on the CLI.

Unknown keys are errors (with the valid ones listed); there is no inheritance between YAML files.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .. import yamltext
from ..meta import IMAGENET_MEAN, IMAGENET_STD


class ConfigError(ValueError):
    pass


MAX_CONFIG_VALUES = 100_000  # values in a config after YAML aliases are expanded; real configs hold < 200
MAX_CONFIG_BYTES = 1_000_000
SHOWN = 200  # characters of a value an error message echoes


def _show_text(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= SHOWN else one[:SHOWN - 3] + "..."


def _show(value: Any) -> str:
    """repr of a value for an error message, cut to SHOWN characters (a YAML alias bomb must not become a
    message of hundreds of MB); the repr of a nested value is built only as far as needed."""
    if isinstance(value, (list, tuple, dict)) and _count_values(value, SHOWN) > SHOWN:
        head = list(value.items())[:5] if isinstance(value, dict) else list(value)[:5]
        inner = ", ".join(_show(x)[:40] for x in head)
        return f"{type(value).__name__} of {len(value)} items ({inner}, ...)"[:SHOWN]
    r = repr(value)
    return r if len(r) <= SHOWN else r[:SHOWN - 3] + "..."


def _count_values(data: Any, limit: int = MAX_CONFIG_VALUES) -> int:
    """Values in `data` with every alias expanded, counted up to just past `limit` (stops early)."""
    n, stack = 0, [data]
    while stack and n <= limit:
        x = stack.pop()
        n += 1
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return n


def _check_expanded(data: Any, where: str) -> None:
    if _count_values(data) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{where} expands to more than {MAX_CONFIG_VALUES:,} values (YAML anchors and aliases "
                          "nested into a bomb?); a config holds a few hundred at most")


@dataclass
class ModelCfg:
    name: str = "segformer-b0"
    num_classes: int | None = None  # None: the dataset's number of classes
    pretrained: str | None = None  # weights to start from: an attnseg/official/transformers checkpoint
    options: dict = field(default_factory=dict)  # create_model overrides, e.g. {drop_path_rate: 0.1}


@dataclass
class DataCfg:
    dataset: str = "camvid"
    root: str | None = None  # None: $ATTNSEG_DATA/<dataset> (data.datasets.resolve_root)
    train_split: str = "train"
    val_split: str = "val"
    crop: list[int] = field(default_factory=lambda: [512, 512])
    scale: list[int] = field(default_factory=lambda: [2048, 512])  # base (long, short) edges for random resize
    ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip: bool = True
    photometric: bool = True
    eval_scale: list[int] | None = None  # keep-ratio resize at evaluation; None = native resolution
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    batch_size: int = 8  # global images per optimizer step (all processes, all accumulation steps)
    workers: int = 2
    limit: int | None = None  # use only the first N training samples (debugging, overfitting tests)
    val_limit: int | None = None
    # LSeg: each iteration draws one name per class from {class: [names]} (or a YAML file of it) and one
    # prompt template per class ("a photo of a {}."); None = the class names as they are
    label_names: Any = None
    label_templates: list[str] | None = None
    # LSeg: precomputed prompt embeddings (attnseg text-table) served instead of loading the
    # text encoder, e.g. on a training machine without it; every prompt the run draws must be in the table
    text_table: str | None = None
    # LSeg: perturb each drawn label embedding by Gaussian noise of about this norm, then renormalise (0 = off)
    label_noise: float = 0.0


@dataclass
class OptimCfg:
    name: str = "adamw"  # adamw | sgd
    lr: float = 6e-5
    weight_decay: float = 0.01
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    head_lr_mult: float = 10.0  # decode head (and other non-backbone params) learning-rate multiplier
    norm_decay: bool = False  # weight decay on norm/bias parameters (SegFormer: off)
    power: float = 1.0  # poly schedule power (1.0 SegFormer, 0.9 classic)
    min_lr: float = 0.0
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6


@dataclass
class TrainCfg:
    iters: int = 160000
    stop_at: int | None = None  # end this run after this iteration (checkpointed), e.g. to fit a time slot
    grad_accum: int = 1
    amp: str = "none"  # none | bf16 | fp16
    clip_grad: float | None = None
    loss: str = "ce"  # ce | ohem
    class_weights: list[float] | None = None
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100000
    aux_weight: float = 0.4
    log_interval: int = 50
    val_interval: int = 4000
    ckpt_interval: int = 4000
    seed: int = 0
    deterministic: bool = False
    sync_bn: bool = False
    channels_last: bool = False  # NHWC weights and inputs: ~1.7x faster CNN training on CPU (SANet, LSeg hybrid)
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    work_dir: str = "runs/exp"
    tensorboard: bool = True


@dataclass
class EvalCfg:
    mode: str = "whole"
    crop: list[int] = field(default_factory=lambda: [512, 512])
    stride: list[int] = field(default_factory=lambda: [341, 341])
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False


@dataclass
class Config:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)


def _check_type(path: str, value: Any, hint) -> Any:
    s = str(hint)
    if value is None:
        if "None" in s or hint is Any:
            return None
        raise ConfigError(f"{path} may not be null")
    if hint is bool or s == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true/false, got {_show(value)}")
    elif s.startswith("int") or hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {_show(value)}")
    elif s.startswith("float") or hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {_show(value)}")
        value = float(value)
    elif s.startswith("str") or hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {_show(value)}")
    elif s.startswith("list"):
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {_show(value)}")
    elif s.startswith("dict") or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {_show(value)}")
    return value


def _merge(obj, data: dict, where: str) -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        path = f"{where}{k}"
        if k not in names:
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {', '.join(sorted(names))}")
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"{path} must be a mapping")
            _merge(cur, v, path + ".")
        else:
            setattr(obj, k, _check_type(path, v, hints[k]))


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# field -> (check, what the accepted values are); each config field that takes a number or a choice
_POS = (lambda v: _num(v) and v > 0, "a finite number > 0")
_NONNEG = (lambda v: _num(v) and v >= 0, "a finite number >= 0")
_POS_INT = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
_NONNEG_INT = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
_OPT_POS_INT = (lambda v: v is None or (isinstance(v, int) and v >= 1), "null or an integer >= 1")
_PAIR = (lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x >= 1 for x in v),
         "two integers >= 1, e.g. [512, 512]")
_UNIT = (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]")
RULES: dict[str, tuple] = {
    "model.num_classes": (lambda v: v is None or (isinstance(v, int) and 1 <= v <= 65535), "null or 1..65535"),
    "data.crop": _PAIR, "data.scale": _PAIR,
    "data.ratio_range": (lambda v: isinstance(v, list) and len(v) == 2 and all(_num(x) and x > 0 for x in v)
                         and v[0] <= v[1], "[low, high] with 0 < low <= high"),
    "data.cat_max_ratio": _UNIT,
    "data.eval_scale": (lambda v: v is None or _PAIR[0](v), "null or two integers >= 1"),
    "data.mean": (lambda v: isinstance(v, list) and len(v) == 3 and all(_num(x) for x in v), "three numbers"),
    "data.std": (lambda v: isinstance(v, list) and len(v) == 3 and all(_num(x) and x > 0 for x in v),
                 "three numbers > 0"),
    "data.batch_size": _POS_INT, "data.workers": _NONNEG_INT, "data.limit": _OPT_POS_INT,
    "data.val_limit": _OPT_POS_INT,
    "data.label_names": (lambda v: v is None or isinstance(v, str) or (isinstance(v, dict) and all(
        isinstance(x, list) for x in v.values())), "null, a YAML file path or a mapping class -> list of names"),
    "data.label_noise": _NONNEG,
    "data.text_table": (lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "null or a file path"),
    "data.label_templates": (lambda v: v is None or (isinstance(v, list) and len(v) >= 1 and all(
        isinstance(x, str) and x.count("{}") == 1 for x in v)), 'null or a list of strings with one "{}"'),
    "optim.name": (lambda v: v in ("adamw", "sgd"), "adamw or sgd"),
    "optim.lr": _POS, "optim.weight_decay": _NONNEG,
    "optim.momentum": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optim.betas": (lambda v: isinstance(v, list) and len(v) == 2 and all(_num(x) and 0 <= x < 1 for x in v),
                    "two numbers in [0, 1)"),
    "optim.head_lr_mult": _POS, "optim.power": _NONNEG, "optim.min_lr": _NONNEG,
    "optim.warmup_iters": _NONNEG_INT, "optim.warmup_ratio": _UNIT,
    "train.iters": _POS_INT, "train.stop_at": _OPT_POS_INT, "train.grad_accum": _POS_INT,
    "train.amp": (lambda v: v in ("none", "bf16", "fp16"), "none, bf16 or fp16"),
    "train.clip_grad": (lambda v: v is None or (_num(v) and v > 0), "null or a number > 0"),
    "train.loss": (lambda v: v in ("ce", "ohem"), "ce or ohem"),
    "train.class_weights": (lambda v: v is None or (isinstance(v, list) and all(_num(x) and x >= 0 for x in v)),
                            "null or a list of numbers >= 0"),
    "train.ohem_thresh": _UNIT, "train.ohem_min_kept": _NONNEG_INT, "train.aux_weight": _NONNEG,
    "train.log_interval": _POS_INT, "train.val_interval": _POS_INT, "train.ckpt_interval": _POS_INT,
    "train.device": (lambda v: v in ("auto", "cpu") or (isinstance(v, str) and v.split(":")[0] == "cuda"),
                     "auto, cpu or cuda[:N]"),
    "train.threads": _OPT_POS_INT, "train.work_dir": (lambda v: bool(v.strip()), "a folder path"),
    "eval.mode": (lambda v: v in ("whole", "slide"), "whole or slide"),
    "eval.crop": _PAIR, "eval.stride": _PAIR,
    "eval.scales": (lambda v: isinstance(v, list) and len(v) >= 1 and all(_num(x) and 0 < x <= 16 for x in v),
                    "a non-empty list of numbers in (0, 16]"),
}


def validate(cfg: Config) -> Config:
    """Check every field against RULES (and across fields); ConfigError names the field, value and range."""
    from ..models import MODELS

    for key, (ok, accepted) in RULES.items():
        section, name = key.split(".")
        v = getattr(getattr(cfg, section), name)
        if not ok(v):
            raise ConfigError(f"{key} = {_show(v)} is out of range; expected {accepted}")
    if cfg.model.name not in MODELS:
        close = [n for n in MODELS if cfg.model.name.split("-")[0] in n][:8]
        raise ConfigError(f"model.name = {cfg.model.name!r} is not a registered architecture"
                          + (f" (did you mean {', '.join(close)}?)" if close else "; see `attnseg models`"))
    if cfg.optim.min_lr > cfg.optim.lr:
        raise ConfigError(f"optim.min_lr = {cfg.optim.min_lr} exceeds optim.lr = {cfg.optim.lr}")
    if cfg.train.stop_at is not None and cfg.train.stop_at > cfg.train.iters:
        raise ConfigError(f"train.stop_at = {cfg.train.stop_at} is after train.iters = {cfg.train.iters}")
    if any(s > c for s, c in zip(cfg.eval.stride, cfg.eval.crop)):
        raise ConfigError(f"eval.stride {cfg.eval.stride} must not exceed eval.crop {cfg.eval.crop}")
    return cfg


SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the shipped models' training configs


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def find_file(spec: str | Path) -> Path:
    """A config or vocabulary file: a path as given, else one shipped with attnseg, named by its shipped name
    (`sanet-effnet-lite0_camvid`) or by its path in the source tree (`configs/vocab/camvid_label_names.yaml`)."""
    p = Path(spec)
    if p.is_file():
        return p
    parts = p.parts[1:] if p.parts[:1] == ("configs",) else p.parts
    for cand in (SHIPPED_CONFIGS.joinpath(*parts), SHIPPED_CONFIGS / f"{p.name}.yaml"):
        if parts and cand.is_file():
            return cand
    return p


def load_config(path: str | Path | None = None, sets: list[str] | None = None) -> Config:
    """The default Config with a YAML file's overrides (a path or a shipped config's name) and `sets`."""
    cfg = Config()
    if path is not None:
        p = find_file(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found (shipped configs, by name: {', '.join(shipped_configs())})")
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {p} is {p.stat().st_size:,} bytes; a config is a few KB "
                                  f"(limit {MAX_CONFIG_BYTES:,})")
            data = yamltext.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {_show_text(str(e))}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                              f"{e.start})") from None
        _check_expanded(data, f"config file {p}")
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping at the top level")
        _merge(cfg, data, "")
    for s in sets or []:
        if "=" not in s:
            raise ConfigError(f"--set expects key=value (e.g. train.iters=1000), got {_show(s)}")
        key, raw = s.split("=", 1)
        try:
            value = yamltext.safe_load(raw)
        except yamltext.YamlTooDeep as e:
            raise ConfigError(f"--set {_show(key)}: {e}") from None
        except yaml.YAMLError:
            value = raw
        _check_expanded(value, f"--set {_show(key)}")
        parts = key.strip().split(".")
        if parts[:2] == ["model", "options"]:
            if len(parts) != 3:
                raise ConfigError(f"--set {key}: model options are set as model.options.NAME=value")
            cfg.model.options[parts[2]] = value
            continue
        node: dict = {}
        cur = node
        for part in parts[:-1]:
            cur[part] = {}
            cur = cur[part]
        cur[parts[-1]] = value
        _merge(cfg, node, "")
    return validate(cfg)


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)

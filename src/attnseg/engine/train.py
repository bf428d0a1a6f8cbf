"""The training loop: iteration-based, resumable to the bit, DDP-ready, with periodic validation.

Data order and augmentation are a pure function of (seed, position in the sample stream): the
stream visits a fresh permutation of the training set each epoch, and sample p gets augmentation
seed (seed, p). A resumed run therefore sees exactly the samples and crops it would have seen,
whatever the number of workers or processes. Model randomness (dropout, drop path) comes from the
torch RNG, whose state is checkpointed.
"""
from __future__ import annotations

import csv
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..data import IGNORE_INDEX, EvalTransform, TrainTransform, build_dataset
from ..models.lseg import is_language_driven
from ..io import atomic_write_text
from .run_state import (atomic_torch_save, load_checkpoint, remove_stale_checkpoint_temps, rng_state,
                         set_rng_state)
from .config import Config, dump_config, validate
from .distributed import all_reduce_sum, cleanup, init_distributed, is_main
from .evaluate import evaluate, normalise
from ..inference.modes import InferenceConfig
from .losses import PixelLoss
from .metrics import format_table
from .syncbn import convert_sync_batchnorm


class TrainingError(RuntimeError):
    pass


class StreamSampler(Sampler):
    """Yields this process's micro-batches of (index, aug_seed) from the global sample stream."""

    def __init__(self, n: int, micro_global: int, rank: int, world: int, seed: int, start: int, steps: int):
        self.n, self.micro_global, self.rank, self.world = n, micro_global, rank, world
        self.seed, self.start, self.steps = seed, start, steps
        self.local = micro_global // world
        self._perm_epoch, self._perm = -1, None

    def _index(self, p: int) -> int:
        e = p // self.n
        if e != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + e)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), e
        return self._perm[p % self.n]

    def __iter__(self):
        for step in range(self.start, self.start + self.steps):
            base = step * self.micro_global + self.rank * self.local
            yield [(self._index(p), (self.seed, p)) for p in range(base, base + self.local)]

    def __len__(self):
        return self.steps


def collate(batch):
    return {"image": torch.stack([b["image"] for b in batch]), "label": torch.stack([b["label"] for b in batch])}


def poly_lr_factor(it: int, cfg) -> float:
    """Linear warm-up from warmup_ratio, then poly decay to min_lr (as a factor of the base lr)."""
    o, total = cfg.optim, cfg.train.iters
    base = o.lr
    coeff = (1 - min(it, total) / total) ** o.power
    lr = (base - o.min_lr) * coeff + o.min_lr
    if it < o.warmup_iters:
        k = (1 - it / o.warmup_iters) * (1 - o.warmup_ratio)
        lr = lr * (1 - k)
    return lr / base


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """Backbone at lr, everything else (decode head, aux heads) at lr * head_lr_mult; no decay on norms/biases."""
    o = cfg.optim
    groups: dict[tuple[bool, bool], list] = {}
    norm_params = set()
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
            norm_params.update(id(p) for p in m.parameters(recurse=False))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not name.startswith(("backbone.", "module.backbone."))
        no_decay = not o.norm_decay and (id(p) in norm_params or p.ndim == 1)
        groups.setdefault((head, no_decay), []).append(p)
    return [{"params": ps, "lr": o.lr * (o.head_lr_mult if head else 1.0), "lr_mult": o.head_lr_mult if head else 1.0,
             "weight_decay": 0.0 if nd else o.weight_decay} for (head, nd), ps in sorted(groups.items())]


def build_optimizer(model, cfg):
    o = cfg.optim
    groups = param_groups(model, cfg)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    raise TrainingError(f"optim.name must be 'adamw' or 'sgd', got {o.name!r}")


def build_model(cfg: Config, num_classes: int):
    import attnseg

    m = cfg.model
    if m.pretrained:
        model = attnseg.load_model(m.pretrained, model=m.name, **m.options)
        if getattr(model, "num_classes", num_classes) != num_classes:
            raise TrainingError(f"{m.pretrained} has {model.num_classes} classes but the dataset has {num_classes}; "
                                "to fine-tune to a new label set, start from its encoder (model.pretrained naming an encoder "
                                "checkpoint) rather than a full segmentation checkpoint")
    else:
        from ..models import has_classifier

        # LSeg has no classifier: the labels (the dataset's class names) set its outputs
        kw = {"num_classes": num_classes} if has_classifier(m.name) else {}
        model = attnseg.create_model(m.name, **kw, **m.options)
    return model


def evaluated_short_side(ds, eval_scale) -> int | None:
    """The short side the model is evaluated at (recorded in its checkpoint for `attnseg predict`): the first
    evaluation image's, after the keep-ratio resize to `eval_scale` when one is set."""
    from PIL import Image

    from ..data.transforms import rescale_size

    if not len(ds):
        return None
    try:
        with Image.open(ds.samples[0][0]) as im:
            w, h = im.size
    except OSError:
        return None
    if eval_scale:
        h, w = rescale_size(h, w, tuple(eval_scale))
    return min(h, w)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("train.device is cuda but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def model_loss(model, outputs, target, pixel_loss, cfg) -> tuple[torch.Tensor, dict]:
    """Models with auxiliary outputs define `loss(outputs, target, pixel_loss)`; plain ones return logits."""
    core = model.module if hasattr(model, "module") else model
    if hasattr(core, "loss"):
        return core.loss(outputs, target, pixel_loss)
    loss = pixel_loss(outputs, target)
    return loss, {"loss": loss.detach()}


RUN_FILES = ("latest.pth", "metrics.csv", "best.safetensors", "final.safetensors")


def prepare_work_dir(work: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder; clear temp files a killed run left."""
    if resume and overwrite:
        raise TrainingError("--resume and --overwrite contradict each other; choose one")
    held = [n for n in RUN_FILES if (work / n).exists()]
    if resume and not (work / "latest.pth").is_file():
        raise TrainingError(f"--resume: no checkpoint at {work / 'latest.pth'}; start without --resume")
    if held and not resume:
        if not overwrite:
            raise TrainingError(f"work dir {work} already holds a run ({', '.join(held)}); pass --resume to continue "
                                "it, --overwrite to replace it, or choose another --work-dir")
        for n in held:
            (work / n).unlink()
        shutil.rmtree(work / "tb", ignore_errors=True)
    if work.is_dir():
        remove_stale_checkpoint_temps(work)


def train(cfg: Config, resume: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    if not cfg.data.text_table:
        return _train(cfg, resume, progress, overwrite, None)
    from ..models.text import TableEncoder, TextEncoderError, serving

    try:
        table = TableEncoder(cfg.data.text_table)
    except TextEncoderError as e:
        raise TrainingError(f"data.text_table: {e}") from None
    with serving(table):  # the table answers for its encoder in this process until training returns
        return _train(cfg, resume, progress, overwrite, table)


@dataclass
class _Run:
    """What the named steps of one training run share: where it runs and what it trains."""
    cfg: Config
    device: torch.device
    rank: int
    world: int
    work: Path
    amp_dtype: torch.dtype | None
    fmt: torch.memory_format
    ds: object = None
    val_ds: object = None
    num_classes: int = 0
    model: nn.Module | None = None  # what forward runs (DDP-wrapped when distributed)
    core: nn.Module | None = None  # the model itself: what is evaluated and saved
    vocab: object = None
    vocab_encoder: object = None
    optimizer: object = None
    scheduler: object = None
    scaler: object = None
    start: int = 0
    best: dict = field(default_factory=lambda: {"mIoU": -1.0, "iter": 0})
    resumed: dict | None = None  # the checkpoint resumed from


def _train(cfg: Config, resume: bool, progress: bool, overwrite: bool, table) -> dict:
    """The run as named steps, in the order that fixes its random draws: set-up, data, seeds and model,
    optimiser, resume, the loop, the final export."""
    run = _setup(validate(cfg), resume, overwrite)
    _load_data(run)
    _build(run, table)
    _optimiser(run)
    if resume:
        _resume(run)
    _distribute(run)
    it, last = _loop(run, progress)
    if is_main() and it == cfg.train.iters:
        _export(run.core, run.work / "final.safetensors", None)
    if is_main() and (run.work / "metrics.csv").exists():
        _curves(run.work / "metrics.csv", run.work / "curves.png")
    cleanup()
    return {"iter": it, "best": {k: v for k, v in run.best.items() if k != "metrics"}, "last": last}


def _setup(cfg: Config, resume: bool, overwrite: bool) -> _Run:
    """Device, processes, threads, determinism, the work dir, and the checks that need them."""
    t = cfg.train
    device = pick_device(t.device)
    rank, world, local_rank = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    work = Path(t.work_dir)
    if is_main():
        prepare_work_dir(work, resume, overwrite)
    if cfg.data.batch_size % (t.grad_accum * world):
        raise TrainingError(f"data.batch_size {cfg.data.batch_size} must be divisible by train.grad_accum "
                            f"({t.grad_accum}) x processes ({world})")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
    if amp_dtype is torch.float16 and device.type == "cpu":
        raise TrainingError("train.amp=fp16 needs CUDA; on CPU use train.amp=bf16")
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    return _Run(cfg, device, rank, world, work, amp_dtype, fmt)


def _load_data(run: _Run) -> None:
    d = run.cfg.data
    train_tf = TrainTransform(crop=tuple(d.crop), scale=tuple(d.scale), ratio_range=tuple(d.ratio_range),
                              cat_max_ratio=d.cat_max_ratio, flip_prob=0.5 if d.flip else 0.0,
                              photometric=d.photometric, ignore_index=IGNORE_INDEX)
    run.ds = build_dataset(d.dataset, d.root, d.train_split, train_tf)
    if d.limit:
        run.ds.samples = run.ds.samples[: d.limit]
    if d.val_split:
        run.val_ds = build_dataset(d.dataset, d.root, d.val_split,
                                   EvalTransform(tuple(d.eval_scale) if d.eval_scale else None))
        if d.val_limit:
            run.val_ds.samples = run.val_ds.samples[: d.val_limit]
    run.num_classes = run.cfg.model.num_classes or run.ds.num_classes


def _build(run: _Run, table) -> None:
    """Seeds, then the model (its random initialisation is the first draw), its labels and what it records."""
    cfg, ds, d = run.cfg, run.ds, run.cfg.data
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    model = build_model(cfg, run.num_classes)
    if table is not None and is_language_driven(model) and model.cfg.text_encoder != table.spec:
        raise TrainingError(f"data.text_table: {d.text_table} holds {table.spec!r} embeddings but "
                            f"{cfg.model.name} uses the text encoder {model.cfg.text_encoder!r}")
    _labels(run, model, table)
    model.meta = {"class_names": ds.class_names if run.num_classes == ds.num_classes else None,
                  "palette": ds.palette, "mean": list(d.mean), "std": list(d.std),
                  "short_side": evaluated_short_side(run.val_ds or ds, d.eval_scale)}
    if run.world > 1 and cfg.train.sync_bn:
        model = convert_sync_batchnorm(model, run.device.type)
    model.to(run.device)
    if cfg.train.channels_last:
        model.to(memory_format=run.fmt)
    run.model = run.core = model


def _labels(run: _Run, model, table) -> None:
    """LSeg trains against the dataset's class names as labels, or against several names and templates per
    class (a vocabulary); every prompt the run can draw must be in a text table it is given."""
    cfg, ds, d = run.cfg, run.ds, run.cfg.data
    several_names = d.label_names is not None or d.label_templates is not None or d.label_noise > 0
    if not is_language_driven(model):
        if several_names or d.text_table:
            raise TrainingError("data.label_names / data.label_templates / data.label_noise / data.text_table are "
                                f"for LSeg models; {cfg.model.name} has fixed classes")
        return
    model.default_labels = ds.class_names
    if several_names:
        from ..models.text import get_text_encoder
        from .vocabulary import LabelVocabulary, VocabularyError, load_names

        try:
            run.vocab = LabelVocabulary(ds.class_names, load_names(d.label_names), d.label_templates,
                                        cfg.train.seed, d.label_noise)
        except VocabularyError as e:
            raise TrainingError(str(e)) from None
        run.vocab_encoder = get_text_encoder(model.cfg.text_encoder, None)  # templates: the vocabulary's
    if table is not None:  # checked now rather than at the iteration drawing a missing prompt
        missing = [p for p in (run.vocab.needed(ds.class_names) if run.vocab else ds.class_names) if p not in table]
        if missing:
            raise TrainingError(f"data.text_table: {len(missing)} prompt(s) this run can draw are not in "
                                f"{d.text_table} (e.g. {missing[:3]}); rebuild it: attnseg text-table --config "
                                "CONFIG --out FILE")


def _optimiser(run: _Run) -> None:
    cfg = run.cfg
    run.optimizer = build_optimizer(run.model, cfg)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda it: poly_lr_factor(it, cfg))
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype is torch.float16)


def _resume(run: _Run) -> None:
    """Model, optimiser, schedule, scaler, iteration and best score from WORK/latest.pth (its RNG state is
    restored later, once the data loader has drawn its seed: `_loop`)."""
    path = run.work / "latest.pth"
    try:
        ck = load_checkpoint(path)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    was = ((ck.get("config") or {}).get("model") or {}).get("name")
    if was is not None and was != run.cfg.model.name:
        raise TrainingError(f"--resume: {path} is a {was} run but the config trains {run.cfg.model.name}; "
                            "use the run's own config (its config.yaml) or another --work-dir")
    try:
        run.core.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise TrainingError(f"--resume: {path} does not fit this model "
                            f"({str(e).splitlines()[-1].strip()}); use the run's own config.yaml") from None
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    run.scaler.load_state_dict(ck["scaler"])
    run.start, run.best, run.resumed = ck["iter"], ck["best"], ck
    if is_main():
        print(f"resumed from {path} at iteration {run.start}", file=sys.stderr)


def _distribute(run: _Run) -> None:
    """DDP around the model when there are several processes; the run's config written beside it."""
    if run.world > 1:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.model = nn.parallel.DistributedDataParallel(run.model, device_ids=device_ids)
    if is_main():
        run.work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.work / "config.yaml", dump_config(run.cfg))


def _loop(run: _Run, progress: bool) -> tuple[int, dict]:
    """Iterations from `run.start`: a step, logs, validation and checkpoints at their intervals."""
    cfg, t, d = run.cfg, run.cfg.train, run.cfg.data
    pixel_loss = PixelLoss(IGNORE_INDEX, t.class_weights, t.loss == "ohem", t.ohem_thresh, t.ohem_min_kept)
    micro_global = d.batch_size // t.grad_accum
    sampler = StreamSampler(len(run.ds), micro_global, run.rank, run.world, t.seed, run.start * t.grad_accum,
                            (t.iters - run.start) * t.grad_accum)
    loader = DataLoader(run.ds, batch_sampler=sampler, num_workers=d.workers, collate_fn=collate,
                        persistent_workers=False, pin_memory=run.device.type == "cuda")
    writer = _tensorboard(run.work) if (t.tensorboard and is_main()) else None
    bar = tqdm(total=t.iters, initial=run.start, unit="it", desc="train",
               disable=not (progress and is_main() and sys.stderr.isatty()), dynamic_ncols=True)
    batches = iter(loader)  # draws a base seed from the torch RNG: restore the RNG only after this
    if run.resumed is not None:
        set_rng_state(run.resumed["rng"])
    run.model.train()
    it, clock, last = run.start, {"tic": time.time(), "seen": 0}, {}
    try:
        end = min(t.iters, t.stop_at) if t.stop_at else t.iters
        while it < end:
            logs = _step(run, batches, pixel_loss, it, clock)
            it += 1
            bar.update(1)
            if it % t.log_interval == 0 or it == t.iters:
                last = _log(run, it, logs, clock, bar, writer)
            if run.val_ds is not None and (it % t.val_interval == 0 or it == t.iters):
                _validate(run, it, progress, writer)
            if (it % t.ckpt_interval == 0 or it == end) and is_main():
                _save(run.work / "latest.pth", run.core, run.optimizer, run.scheduler, run.scaler, it, run.best, cfg)
    finally:
        bar.close()
        if writer:
            writer.close()
    return it, last


def _step(run: _Run, batches, pixel_loss, it: int, clock: dict) -> dict:
    """One optimiser step over train.grad_accum micro-batches; the mean of each loss part."""
    t, d = run.cfg.train, run.cfg.data
    run.optimizer.zero_grad(set_to_none=True)
    logs: dict = {}
    for _ in range(t.grad_accum):
        b = next(batches)
        x = normalise(b["image"].to(run.device, non_blocking=True), d.mean, d.std).contiguous(memory_format=run.fmt)
        y = b["label"].to(run.device, non_blocking=True)
        kw = {"text_embeddings": run.vocab.embeddings(run.vocab_encoder, it).to(run.device)} if run.vocab else {}
        with torch.autocast(device_type=run.device.type, dtype=run.amp_dtype or torch.bfloat16,
                            enabled=run.amp_dtype is not None):
            out = run.model(x, **kw)
        loss, parts = model_loss(run.model, out, y, pixel_loss, run.cfg)
        total = all_reduce_sum(loss.detach().clone()) / run.world
        if not torch.isfinite(total):
            raise TrainingError(
                f"non-finite loss ({total.item()}) at iteration {it + 1}; stopping. Nothing was saved for this "
                f"iteration; the last good checkpoint is {run.work / 'latest.pth'} (if any). Try a lower optim.lr, "
                "train.clip_grad, or train.amp=none.")
        run.scaler.scale(loss / t.grad_accum).backward()
        for k, v in parts.items():
            logs[k] = logs.get(k, 0.0) + float(v) / t.grad_accum
        clock["seen"] += x.shape[0] * run.world
    if t.clip_grad:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return logs


def _log(run: _Run, it: int, logs: dict, clock: dict, bar, writer) -> dict:
    """The losses, learning rate and images/s since the last log: progress bar, metrics.csv, TensorBoard."""
    group = run.optimizer.param_groups[0]
    el = time.time() - clock["tic"]
    last = {"iter": it, **{k: round(v, 5) for k, v in logs.items()}, "lr": group["lr"] / group["lr_mult"],
            "img_s": round(clock["seen"] / max(el, 1e-9), 2)}
    clock.update(tic=time.time(), seen=0)
    bar.set_postfix(loss=f"{logs.get('loss', 0):.4f}", lr=f"{last['lr']:.2e}", img_s=last["img_s"])
    if is_main():
        _csv(run.work / "metrics.csv", last)
        if bar.disable:
            print(json.dumps(last), file=sys.stderr, flush=True)
        if writer:
            for k, v in last.items():
                if k != "iter":
                    writer.add_scalar(f"train/{k}", v, it)
    return last


def _validate(run: _Run, it: int, progress: bool, writer) -> None:
    """Score the validation split; a better mIoU is exported as best.safetensors."""
    cfg = run.cfg
    inference = InferenceConfig(cfg.eval.mode, tuple(cfg.eval.crop), tuple(cfg.eval.stride), scales=cfg.eval.scales,
                                flip=cfg.eval.flip)
    m = evaluate(run.core, run.val_ds, inference, cfg.data.mean, cfg.data.std, run.device, run.num_classes, run.rank,
                 run.world, run.amp_dtype if run.device.type == "cuda" else None, progress)
    if is_main():
        _csv(run.work / "metrics.csv", {"iter": it, "val_aAcc": m["aAcc"], "val_mAcc": m["mAcc"],
                                         "val_mIoU": m["mIoU"]})
        print(f"\n[iter {it}] validation\n{format_table(m, run.ds.class_names)}", file=sys.stderr, flush=True)
        if writer:
            for k in ("aAcc", "mAcc", "mIoU"):
                writer.add_scalar(f"val/{k}", m[k], it)
    if m["mIoU"] > run.best["mIoU"]:
        run.best = {"mIoU": m["mIoU"], "iter": it, "metrics": m}
        if is_main():
            _export(run.core, run.work / "best.safetensors", run.best)
    run.model.train()


def _save(path, core, optimizer, scheduler, scaler, it, best, cfg):
    atomic_torch_save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                       "iter": it, "best": best, "config": asdict(cfg)}, path)


def _export(core, path, best):
    from ..checkpoint import save_model

    extra = {"trained_iters_best": best["iter"], "val_mIoU": best["mIoU"]} if best else None
    save_model(core, path, extra=extra)


def _curves(csv_path: Path, png: Path) -> None:
    """loss / lr / val mIoU curves beside metrics.csv (needs matplotlib: the `plot` extra)."""
    from ..plots import PlotUnavailable, training_curves

    try:
        training_curves(csv_path, png)
    except PlotUnavailable as e:
        print(f"note: no {png.name}: {e}", file=sys.stderr)


def _csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["key", "value", "iter"])
        for k, v in row.items():
            if k != "iter":
                w.writerow([k, v, row["iter"]])


def _tensorboard(work: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(str(work / "tb"))

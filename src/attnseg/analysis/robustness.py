"""`attnseg robustness`: mIoU under the 16 Cityscapes-C corruptions (SegFormer Sec. 4.4, Table 5) on any
dataset the engine reads. Corruptions hit the image only (labels unchanged), deterministically per (image,
corruption, severity): the seed is a CRC of the three, so a run repeats exactly and models see the same
corrupted images."""
from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path

import numpy as np
import torch

from .corruptions import CORRUPTIONS, GROUPS, PROTOCOL_SEVERITIES, corrupt


class Corrupted(torch.utils.data.Dataset):
    """A segmentation dataset whose images are corrupted on the fly."""

    def __init__(self, base, name: str, severity: int):
        self.base, self.name, self.severity = base, name, severity

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = self.base[i]
        img = s["image"].permute(1, 2, 0).numpy()
        seed = zlib.crc32(f"{i}/{self.name}/{self.severity}".encode())
        s = dict(s, image=torch.from_numpy(corrupt(np.ascontiguousarray(img), self.name, self.severity, seed))
                 .permute(2, 0, 1))
        return s

    @property
    def class_names(self):
        return self.base.class_names


def summarize(rows: list[dict]) -> dict:
    """Per model: clean mIoU, mean per corruption, mean per group, overall mean, relative to clean."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        clean = next(r["mIoU"] for r in mine if r["corruption"] == "clean")
        per = {c: float(np.mean([r["mIoU"] for r in mine if r["corruption"] == c]))
               for c in CORRUPTIONS if any(r["corruption"] == c for r in mine)}
        groups = {g: float(np.mean([per[c] for c in cs if c in per])) for g, cs in GROUPS.items()
                  if any(c in per for c in cs)}
        mean = float(np.mean(list(per.values()))) if per else float("nan")
        out[model] = {"clean": clean, "per_corruption": per, "per_group": groups, "mean": mean,
                      "relative": {c: v / clean for c, v in per.items()} if clean else {}}
    return out


def table(rows: list[dict], summary: dict) -> str:
    models = list(summary)
    severities = sorted({r["severity"] for r in rows if r["severity"]})
    lines = ["| corruption | group | " + " | ".join(f"{m} s{s}" for m in models for s in severities) + " | "
             + " | ".join(f"{m} mean (rel.)" for m in models) + " |"]
    lines.append("|" + " --- |" * (2 + len(models) * (len(severities) + 1)))
    lines.append("| clean | | " + " | ".join("" for _ in models for _ in severities) + " | "
                 + " | ".join(f"{100 * summary[m]['clean']:.2f}" for m in models) + " |")
    for c in CORRUPTIONS:
        if not any(r["corruption"] == c for r in rows):
            continue
        g = next(k for k, v in GROUPS.items() if c in v)
        cells = []
        for m in models:
            for s in severities:
                v = next((r["mIoU"] for r in rows if (r["model"], r["corruption"], r["severity"]) == (m, c, s)), None)
                cells.append(f"{100 * v:.2f}" if v is not None else "-")
        means = [f"{100 * summary[m]['per_corruption'][c]:.2f} ({100 * summary[m]['relative'][c]:.0f}%)"
                 for m in models]
        lines.append(f"| {c} | {g} | " + " | ".join(cells) + " | " + " | ".join(means) + " |")
    for g in GROUPS:
        if any(g in summary[m]["per_group"] for m in models):
            lines.append(f"| **{g}** (mean) | | " + " | ".join("" for _ in models for _ in severities) + " | "
                         + " | ".join(f"{100 * summary[m]['per_group'].get(g, float('nan')):.2f}" for m in models)
                         + " |")
    return "\n".join(lines)


def write(rows: list[dict], out_dir, title: str) -> dict:
    from ..io import atomic_write, atomic_write_text

    out_dir = Path(out_dir)
    summary = summarize(rows)
    atomic_write_text(out_dir / "robustness.json", json.dumps({"rows": rows, "summary": summary}, indent=2))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["model", "corruption", "group", "severity", "mIoU", "aAcc"])
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in w.fieldnames})
    atomic_write_text(out_dir / "robustness.csv", buf.getvalue())
    md = table(rows, summary)
    atomic_write_text(out_dir / "robustness.md", md + "\n")
    from ..plots import pyplot

    plt = pyplot()
    names = [c for c in CORRUPTIONS if any(c in s["per_corruption"] for s in summary.values())]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    for m, s in summary.items():
        line, = ax.plot(range(len(names)), [100 * s["per_corruption"][c] for c in names], marker="o", label=m)
        ax.axhline(100 * s["clean"], color=line.get_color(), ls="--", lw=1)
    ax.set_xticks(range(len(names)), [c.replace("_", " ") for c in names], rotation=50, ha="right", fontsize=8)
    ax.set_ylabel("mIoU (%), mean over severities")
    ax.set_title(title + " (dashed: clean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out_dir / "robustness.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return summary


def jobs(severities=None, corruptions=None) -> list[tuple[str, int]]:
    """(corruption, severity) in run order: clean first (severity 0), then each corruption x severity."""
    return [("clean", 0)] + [(c, v) for c in (corruptions or CORRUPTIONS)
                             for v in (severities or PROTOCOL_SEVERITIES[c])]


def run(models: dict, dataset, inference, device: str, severities=None, corruptions=None, progress=False,
        done: list | None = None, on_row=None) -> list:
    """rows of {model, corruption, group, severity, mIoU, aAcc}, per model clean first, then each corruption x
    severity. Each corrupted image is made once and scored by every model. `done` holds rows of an earlier,
    interrupted run (skipped here, kept in the result); `on_row(row)` is called as each row is finished."""
    from ..engine.evaluate import evaluate_models

    rows = list(done or [])
    have = {(r["model"], r["corruption"], r["severity"]) for r in rows}
    todo = jobs(severities, corruptions)
    for c, v in todo:
        names = [n for n in models if (n, c, v) not in have]
        if not names:
            continue
        entries = [entry(models[n], dataset) for n in names]
        for n, m in zip(names, evaluate_models(entries, variant(dataset, (c, v)), inference, device,
                                               dataset.num_classes, progress=progress)):
            row = make_row(n, (c, v), m)
            rows.append(row)
            if on_row:
                on_row(row)
    return ordered(rows, models, todo)


def entry(model, dataset) -> tuple:
    """(model, mean, std, keywords) as evaluate_models takes it; LSeg is given the dataset's class names."""
    meta = getattr(model, "meta", {}) or {}
    kw = {"labels": dataset.class_names} if getattr(model, "num_classes", None) is None else None
    return model, meta.get("mean"), meta.get("std"), kw


def variant(dataset, job: tuple[str, int]):
    """The dataset a (corruption, severity) job evaluates: the clean one, or its corrupted images."""
    c, v = job
    return dataset if c == "clean" else Corrupted(dataset, c, v)


def make_row(name: str, job: tuple[str, int], metrics: dict) -> dict:
    c, v = job
    g = next((k for k, cs in GROUPS.items() if c in cs), "")
    return {"model": name, "corruption": c, "group": g, "severity": v, "mIoU": metrics["mIoU"],
            "aAcc": metrics["aAcc"]}


def ordered(rows: list[dict], models, todo: list) -> list[dict]:
    """Rows per model (in `models` order), clean first, then the jobs in run order."""
    order = {n: i for i, n in enumerate(models)}
    when = {j: i for i, j in enumerate(todo)}
    return sorted((r for r in rows if r["model"] in order),
                  key=lambda r: (order[r["model"]], when.get((r["corruption"], r["severity"]), len(when))))

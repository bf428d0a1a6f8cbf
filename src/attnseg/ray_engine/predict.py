"""`attnseg predict --engine ray`: label maps and overlays for many images on a Ray cluster.

The steps are inference.pipeline's, as `attnseg predict` runs them on one machine: rows are (image, output
base) pairs planned by `plan_outputs`, so the outputs land in the same layout; a Ray task reads each row
(`read_item`: skipped when an earlier run left both outputs complete at the image's size, unless --overwrite);
actors, each holding the model once, run and write the rows of a batch (`run_batch`). A failed image is one
row with its reason, the same reason a local run gives; it never stops the job.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..inference.outputs import output_files
from ..inference.pipeline import Item, read_item, run_batch
from . import run_pool


def read_row(row: dict, max_pixels: int | None, overwrite: bool, since: float = 0.0) -> dict:
    """Ray task: {src, base} -> {src, base, rgb, skip, error}: pipeline.read_item as a row (an empty image when
    there is none)."""
    it = read_item(row["src"], row["base"], max_pixels, resume=not overwrite, since=since)
    return {"src": it.src, "base": it.base, "rgb": it.rgb if it.rgb is not None else np.zeros((0, 0, 3), np.uint8),
            "skip": it.skip, "error": it.error}


def _setup(build, alpha: float):
    """In each actor, once: the Segmenter, palette and model keywords (`build()`), and the batch function
    (pipeline.run_batch over the rows of a batch)."""
    seg, palette, kw = build()

    def work(rows: list[dict]) -> list[dict]:
        items = [Item(r["src"], r["base"], r["rgb"] if r["rgb"].size else None, r["skip"], r["error"]) for r in rows]
        return [{"src": r.src, "status": r.status, "reason": r.reason}
                for r in run_batch(seg, items, kw, palette, alpha)]

    return work


@dataclass
class Summary:
    """A Ray predict job: images written, skipped as finished, failed (with reasons), time and restarts."""
    written: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # (image, reason)
    seconds: float = 0.0
    workers: int = 1
    restarts: int = 0
    interrupted: bool = False

    def lines(self) -> list[str]:
        if self.interrupted:  # rows still in flight are not counted: what is on disk is complete either way
            return [f"interrupted after {self.seconds:.1f} s ({self.written} image(s) reported written); the files "
                    "written are complete, and running the same command again does only the rest"]
        rate = self.written / self.seconds if self.seconds else 0.0
        out = [f"{self.written} image(s) segmented in {self.seconds:.1f} s ({rate:.2f} images/s) on "
               f"{self.workers} worker(s)"
               + (f"; {self.skipped} skipped: finished by an earlier run" if self.skipped else "")
               + (f"; {len(self.failed)} failed" if self.failed else "")]
        if self.restarts:
            out.append(f"{self.restarts} worker process(es) died and were restarted by Ray; the images they held "
                       "were run again")
        return out


def predict(plan: list[tuple[str, Path]], build, workers: int, threads: int | None = None, gpus: float = 0.0,
            batch: int = 4, alpha: float = 0.5, max_pixels: int | None = None, overwrite: bool = False,
            on_done=None) -> Summary:
    """Segment every (image, output base) of `plan` on the connected Ray cluster. `build()` runs in each actor
    and returns (Segmenter, palette, model keywords); `on_done(row)` sees each finished image (progress)."""
    summary = Summary(workers=workers)
    t0 = time.perf_counter()

    def on_row(row):
        if row["status"] == "ok":
            summary.written += 1
        elif row["status"] == "skipped":
            summary.skipped += 1
        else:
            summary.failed.append((row["src"], row["reason"]))
        if on_done is not None:
            on_done(row)

    report = run_pool([{"src": str(f), "base": str(b)} for f, b in plan], functools.partial(_setup, build, alpha),
                      workers, threads, gpus, batch,
                      read=functools.partial(read_row, max_pixels=max_pixels, overwrite=overwrite, since=time.time()),
                      on_row=on_row)
    summary.seconds, summary.restarts, summary.interrupted = time.perf_counter() - t0, len(report.restarts), \
        report.interrupted
    if report.restarts and not report.interrupted:
        _remove_dead_writers_temps(plan)
    return summary


def _remove_dead_writers_temps(plan: list[tuple[str, Path]]) -> None:
    """After a job whose workers died: remove temp files (`.NAME.XXXXXX.tmp`, io.atomic_write) a killed writer
    left beside this job's outputs. Every output is final by now, so none of them is still being written; one
    listing per output folder, not a search per image."""
    wanted: dict[Path, set[str]] = {}
    for _, base in plan:
        for p in output_files(Path(base)):
            wanted.setdefault(p.parent, set()).add(p.name)
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".tmp") and e.name[1:-4].rsplit(".", 1)[0] in names:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)

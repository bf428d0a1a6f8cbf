"""`attnseg predict --engine ray`: label maps and overlays for many images on a Ray cluster.

Rows are (image, output base) pairs planned exactly as on one machine, so the outputs land in the same
layout. A Ray task reads each row: it skips the image when an earlier run left both outputs complete at the
image's size (`outputs.outputs_complete`), else decodes it with the one image reader (`io.read_image`). Actors, each
holding the model once, segment the decoded images in batches of one size and write them with the same
atomic writer. A failed image is one row with its reason; it never stops the job.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import ImageReadError, WriteFailed, first_line, read_image
from ..inference.outputs import clear_stale_temps, oriented_size, output_files, outputs_complete, write_prediction
from . import run_pool

MAX_FILE_BYTES = 1 << 30  # a remote file is read into memory whole: bigger ones are refused, not fetched


def is_uri(s) -> bool:
    """A URL pyarrow's filesystem layer reads (s3://BUCKET/KEY, gs://, hdfs://, file:///PATH)."""
    return "://" in str(s)


def list_uri(uri: str, extensions: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(file URI, path relative to `uri`) of every image below `uri` (a file or a folder) on any filesystem
    pyarrow reads (s3://, gs://, hdfs://, ...), sorted; credentials come from the environment as pyarrow's."""
    pafs = _pyarrow_fs(uri)

    filesystem, root = pafs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input not found: {uri}")
    if info.type == pafs.FileType.File:
        return [(uri, Path(Path(root).name))]
    found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted((f"{scheme}://{f.path}", Path(f.path).relative_to(root)) for f in found
                  if f.type == pafs.FileType.File and Path(f.path).suffix.lower() in extensions)


def _pyarrow_fs(uri: str):
    """pyarrow's filesystem layer, or ImportError naming the extra that brings it."""
    try:
        from pyarrow import fs
    except ImportError:
        raise ImportError(f"{uri}: reading URLs needs pyarrow, part of the ray extra: pip install 'attnseg[ray]'") \
            from None
    return fs


def _source(src: str):
    """What read_image takes for `src`: the path itself, or a remote file's bytes (size-checked first)."""
    if not is_uri(src):
        return src
    pafs = _pyarrow_fs(src)

    filesystem, path = pafs.FileSystem.from_uri(src)
    size = filesystem.get_file_info(path).size
    if size is None or size > MAX_FILE_BYTES:
        raise ImageReadError(f"{src}: {size} bytes; at most {MAX_FILE_BYTES} are fetched")
    with filesystem.open_input_stream(path) as f:
        return io.BytesIO(f.read())


def read_row(row: dict, max_pixels: int | None, overwrite: bool, since: float = 0.0) -> dict:
    """Ray task: {src, base} -> {src, base, rgb, skip, error}: the decoded image, or why there is none. skip is
    "earlier" for outputs an earlier run finished, "now" for ones this job finished before the worker that
    wrote them died (written after `since`, the job's start: its batch is being run again)."""
    from PIL import Image

    out = {"src": row["src"], "base": row["base"], "rgb": np.zeros((0, 0, 3), np.uint8), "skip": "", "error": ""}
    try:
        source = _source(row["src"])
        if not overwrite and _finished(source, Path(row["base"])):
            return dict(out, skip="now" if _written_since(Path(row["base"]), since) else "earlier")
        out["rgb"] = read_image(source, max_pixels, name=row["src"])
    except (ImageReadError, OSError, ValueError, Image.DecompressionBombError) as e:
        msg = first_line(e)
        out["error"] = msg if row["src"] in msg else f"{row['src']}: {msg}"
    return out


def _finished(source, base: Path) -> bool:
    """Whether an earlier run left complete outputs for this image (its header gives the size they must have;
    an image PIL cannot open is not finished: read_image then says what is wrong with it)."""
    from PIL import Image

    try:
        with Image.open(source) as header:
            size = oriented_size(header)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    clear_stale_temps(base)
    return outputs_complete(base, size)


def _written_since(base: Path, since: float) -> bool:
    try:
        return since > 0 and min(p.stat().st_mtime for p in output_files(base)) >= since
    except OSError:
        return False


def _setup(build, alpha: float):
    """In each actor, once: the Segmenter, palette and model keywords (`build()`), and the batch function."""
    seg, palette, kw = build()

    def work(rows: list[dict]) -> list[dict]:
        done = {}
        for r in rows:
            if r["skip"]:
                done[r["src"]] = ("ok", "") if r["skip"] == "now" else ("skipped", "")
            elif r["error"]:
                done[r["src"]] = "failed", r["error"]
        by_shape: dict = {}
        for r in rows:
            if r["src"] not in done:
                by_shape.setdefault(r["rgb"].shape, []).append(r)
        for group in by_shape.values():
            try:
                maps = seg.predict_images([r["rgb"] for r in group], **kw)
            except (MemoryError, RuntimeError, ValueError) as e:
                for r in group:
                    done[r["src"]] = "failed", f"{r['src']}: {type(e).__name__}: {first_line(e)}"
                continue
            for r, label in zip(group, maps):
                try:
                    write_prediction(Path(r["base"]), r["rgb"], label, palette, seg.class_names, alpha)
                    done[r["src"]] = "ok", ""
                except WriteFailed as e:
                    done[r["src"]] = "failed", str(e)
        return [{"src": r["src"], "status": done[r["src"]][0], "reason": done[r["src"]][1]} for r in rows]

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

"""The predict pipeline, one for `attnseg predict` on one machine and for `--engine ray` on a cluster:

    plan_outputs  inputs (files, folders, URLs) -> (image, output base) pairs: the output layout; collisions,
                  outputs that would replace inputs and inputs lying under the output folder refused
    read_item     one image decoded (io.read_image), or why not; with `resume`, skipped when an earlier run
                  left its outputs complete at the image's size
    run_batch     label maps for the items of a batch, grouped by size (Segmenter.predict_images bounds each
                  pass by BATCH_PIXELS), each written atomically (outputs.write_prediction)

Error policy, the same wherever the steps run: READ_ERRORS fail the one image while reading; an image whose
working size no limit fits fails alone; RUN_ERRORS fail the images of one forward pass; a write that fails
(io.WriteFailed) fails its image, and `Result.stop` says when later writes would fail the same way (a full
disk), which ends a local run. No failure ends a job otherwise; each is one line naming the image.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import IMAGE_EXTENSIONS, ImageNote, ImageReadError, WriteFailed, first_line, read_image
from ..worksize import WorkSizeError
from .outputs import clear_stale_temps, oriented_size, output_files, outputs_complete, write_prediction
from .video import VIDEO_EXTENSIONS, video_outputs

MAX_FILE_BYTES = 1 << 30  # a remote file is read into memory whole: bigger ones are refused, not fetched
READ_ERRORS = (ImageReadError, OSError, ValueError, Image.DecompressionBombError)
RUN_ERRORS = (MemoryError, RuntimeError, ValueError)


class PlanError(ValueError):
    """The inputs or the output folder cannot be planned; the message is one line."""


@dataclass
class Item:
    """One image on its way: `rgb` once read; `skip` "earlier" (finished by an earlier run) or "now" (finished by
    this job before the worker that wrote it died); `error` one line; `notes` lines about how it was read."""
    src: str
    base: str
    rgb: np.ndarray | None = None
    skip: str = ""
    error: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    """What became of one item: status ok, skipped or failed (with `reason`, one line); `label` its map (ok);
    `replaced` files an earlier run had written; `stop` true when the failure will repeat for every later write."""
    src: str
    status: str
    reason: str = ""
    label: np.ndarray | None = None
    replaced: int = 0
    stop: bool = False


def is_uri(s) -> bool:
    """A URL pyarrow's filesystem layer reads (s3://BUCKET/KEY, gs://, hdfs://, file:///PATH)."""
    return "://" in str(s)


def _pyarrow_fs(uri: str):
    """pyarrow's filesystem layer, or ImportError naming the extra that brings it."""
    try:
        from pyarrow import fs
    except ImportError:
        raise ImportError(f"{uri}: reading URLs needs pyarrow, part of the ray extra: pip install 'attnseg[ray]'") \
            from None
    return fs


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


def read_item(src: str, base: str, max_pixels: int | None, resume: bool = False, since: float = 0.0) -> Item:
    """Read one image of the plan. resume: skip it when an earlier run left both outputs complete (`since`, the
    job's start: outputs written after it were written by this job, "now")."""
    item = Item(str(src), str(base))
    try:
        source = _source(item.src)
        if resume and _finished(source, Path(base)):
            item.skip = "now" if _written_since(Path(base), since) else "earlier"
            return item
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", ImageNote)
            item.rgb = read_image(source, max_pixels, name=item.src)
        item.notes = [str(n.message) for n in notes if issubclass(n.category, ImageNote)]
    except (*READ_ERRORS, ImportError) as e:
        msg = first_line(e)
        item.error = msg if item.src in msg else f"{item.src}: {msg}"
    return item


def _finished(source, base: Path) -> bool:
    """Whether an earlier run left complete outputs for this image (its header gives the size they must have;
    an image PIL cannot open is not finished: read_image then says what is wrong with it)."""
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


def run_batch(seg, items: list[Item], kw: dict, palette, alpha: float) -> list[Result]:
    """Segment and write the items of one batch; one Result per item, in order."""
    done: dict[int, Result] = {}
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        if it.skip:
            done[i] = Result(it.src, "ok" if it.skip == "now" else "skipped")
        elif it.error:
            done[i] = Result(it.src, "failed", it.error)
        else:
            try:
                seg.working_size(*it.rgb.shape[:2])
            except WorkSizeError as e:
                done[i] = Result(it.src, "failed", f"{it.src}: {first_line(e)}")
                continue
            groups.setdefault(it.rgb.shape, []).append(i)
    for idx in groups.values():
        try:
            maps = seg.predict_images([items[i].rgb for i in idx], **kw)
        except RUN_ERRORS as e:
            for i in idx:
                done[i] = Result(items[i].src, "failed", f"{items[i].src}: {type(e).__name__}: {first_line(e)}")
            continue
        for i, label in zip(idx, maps):
            it = items[i]
            try:
                replaced = write_prediction(Path(it.base), it.rgb, label, palette, seg.class_names, alpha)
                done[i] = Result(it.src, "ok", label=label, replaced=replaced)
            except WriteFailed as e:
                done[i] = Result(it.src, "failed", str(e), stop=e.stop)
    return [done[i] for i in range(len(items))]


def plan_outputs(inputs: list[str], out: Path) -> list[tuple[Path | str, Path]]:
    """(input image or video, output base path without extension) for every file the inputs name.

    Outputs mirror each image's path under the folder argument it was found in (`OUT/SUB/NAME.png`, a
    file argument gives `OUT/NAME.png`). Images whose names differ only by extension keep it
    (`OUT/NAME.jpg.png`); the same relative path from two arguments goes under each argument's folder
    name (`OUT/a/NAME.png`, `OUT/b/NAME.png`). The output folder is never walked as input, an output
    never replaces an input, and two inputs never share an output (PlanError if no rule separates them).
    """
    if out.exists() and not out.is_dir():
        raise PlanError(f"--out {out} is a file; name a folder for the label maps and overlays")
    entries, under_out = _entries(inputs, out)
    if not entries and under_out:
        raise PlanError(f"the {len(under_out)} image(s) or video(s) in {', '.join(inputs)} lie inside --out {out}, "
                        "whose files are taken for outputs and skipped; choose an --out outside the inputs")
    if not entries:
        out_r = out.resolve()
        raise PlanError(f"no images or videos found in {', '.join(inputs)} (looked for "
                        f"{', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)}"
                        + (f"; {out} itself is skipped" if any(Path(i).resolve() in out_r.parents for i in inputs)
                           else "") + ")")
    plan = [(f, out / b) for (f, _, _), b in zip(entries, _bases(entries, out))]
    inputs_r = {Path(f).resolve() for f, _ in plan if not is_uri(f)}
    for _, b in plan:
        for o in output_files(b) + video_outputs(b):
            if o.resolve() in inputs_r:
                raise PlanError(f"output {o} would replace an input image; choose another --out")
    return plan


def _entries(inputs: list[str], out: Path):
    """(file, path relative to its argument, the argument's name) of every input file; and those under --out."""
    out_r = out.resolve()
    entries: list[tuple] = []
    under_out: list[Path] = []  # found under --out: taken for outputs, skipped
    for s in inputs:
        p = Path(s)
        if is_uri(s):
            try:
                found = list_uri(s, IMAGE_EXTENSIONS)
            except (OSError, ValueError, ImportError) as e:
                raise PlanError(f"input {s}: {first_line(e)}") from None
            entries += [(f, rel, Path(s.rstrip("/")).name or "input") for f, rel in found]
        elif p.is_dir():
            if p.resolve() == out_r:
                raise PlanError(f"--out {out} is the input folder {s}: the outputs would be mixed with (and could "
                                "replace) the images; choose another --out")
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS and f.is_file():
                    if out_r in f.resolve().parents:
                        under_out.append(f)
                    else:
                        entries.append((f, f.relative_to(p), p.resolve().name or "input"))
        elif p.is_file():
            entries.append((p, Path(p.name), p.resolve().parent.name or "input"))
        elif p.exists():
            raise PlanError(f"input {s} is neither a file nor a folder")
        else:
            raise PlanError(f"input not found: {s}")
    return entries, under_out


def _bases(entries, out: Path) -> list[Path]:
    """Output bases (relative to --out) that no two inputs share: the extension kept, then the argument's name."""
    def key(b: Path) -> str:
        return str(b).lower()  # case-insensitive file systems

    bases = [rel.with_suffix("") for _, rel, _ in entries]
    for rule in ("extension", "argument"):
        groups: dict[str, list[int]] = {}
        for i, b in enumerate(bases):
            groups.setdefault(key(b), []).append(i)
        for idx in (g for g in groups.values() if len(g) > 1):
            for i in idx:
                _, rel, arg = entries[i]
                if rule == "extension" and len({entries[j][2] for j in idx}) == 1:
                    bases[i] = rel
                elif rule == "argument":
                    bases[i] = Path(arg) / bases[i]
    seen: dict[str, Path] = {}
    for (f, _, _), b in zip(entries, bases):
        if key(b) in seen:
            raise PlanError(f"{seen[key(b)]} and {f} would write the same output {out / b}.png; "
                            "predict them in separate runs (or with separate --out folders)")
        seen[key(b)] = f
    return bases

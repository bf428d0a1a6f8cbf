"""Video in, segmented video out: `attnseg predict clip.mp4 --out DIR`.

Three stages run at once, connected by small bounded queues, so decoding and encoding overlap inference:

    reader thread   decode (PyAV/ffmpeg) -> RGB, display rotation applied (phone videos) -> normalised tensor
    main thread     batches of frames -> the model's scores (eager or bf16); with a graph runtime (ONNX,
                    int8, OpenVINO) a frame a call, up to 4 calls at once sharing the model's threads
    writer thread   upsample + argmax -> overlay -> H.264 (libx264, yuv420p); with --save-masks one label
                    PNG per frame

The overlay video is written to a temp file beside its destination and renamed at the end, so a stopped
run leaves no half-written video. Audio is not copied. PyAV (`pip install 'attnseg[video]'`) bundles its
own ffmpeg, so no system ffmpeg is needed.
"""
from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from ..notes import Note

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".3gp", ".gif")
_END = object()


class VideoReadError(ValueError):
    pass


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _require_av():
    try:
        import av
    except ImportError:
        raise ImportError("video input needs PyAV: pip install 'attnseg[video]' (or pip install av)") from None
    return av


def overlapping_calls(backend: str, threads: int | None) -> int:
    """How many model calls a video runs at once: on a graph runtime (onnxruntime without spinning, OpenVINO
    streams) one per thread up to 4, the threads shared among them (`attnseg.open(callers=)`), so decoding,
    labels and encoding run in the gaps; eager PyTorch one, with its own threads. `threads`: the model's threads
    (None: PyTorch's, by default one per core)."""
    if backend == "eager":
        return 1
    import torch

    return max(1, min(threads or torch.get_num_threads(), 4))


def video_outputs(base: Path) -> tuple[Path, Path]:
    """The overlay video and the folder of per-frame label PNGs written for one video."""
    return base.with_name(base.name + "_overlay.mp4"), base.with_name(base.name + "_masks")


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a stream's display rotation (FFmpeg's display matrix: degrees counter-clockwise), as players do."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class OverlayLUT:
    """image * (1 - alpha) + colour[label] * alpha in 8.8 fixed point, rounded (within 1 of float): a 480 x 360
    frame in 0.5 ms (`np.take` gathers the colours 3x faster than indexing)."""

    def __init__(self, palette: list[list[int]], alpha: float):
        self.keep = np.uint16(round((1 - alpha) * 256))
        self.colours = np.round(np.asarray(palette, np.float32) * alpha * 256).astype(np.uint16) + np.uint16(128)

    def __call__(self, rgb: np.ndarray, label: np.ndarray) -> np.ndarray:
        out = rgb.astype(np.uint16)
        out *= self.keep
        out += np.take(self.colours, label, axis=0)
        out >>= 8
        return out.astype(np.uint8)


def _even(rgb: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: replicate the last row/column when a side is odd."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return rgb


def segment_video(seg, src, dst, masks_dir=None, batch: int = 4, alpha: float = 0.5, palette=None,
                  max_pixels: int | None = None, progress: Callable[[int], None] | None = None,
                  crf: int = 20, preset: str = "ultrafast", workers: int = 1, **kw) -> dict:
    """Segment every frame of `src` with the `Segmenter` `seg`; write the overlay video to `dst` (MP4, H.264)
    and, when `masks_dir` is given, DIR/000000.png ... (palette PNGs of class indices, one per frame).
    Returns {"frames", "seconds", "fps", "size"}; `progress(n)` is called as frames are written.
    """
    import torch

    av = _require_av()
    from ..io import DEFAULT_MAX_PIXELS, atomic_write

    src, dst = Path(src), Path(dst)
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:  # not a video, truncated header, unreadable
        raise VideoReadError(f"cannot read video {src}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{src} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    w, h = stream.codec_context.width, stream.codec_context.height
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if w * h > limit:
        container.close()
        raise VideoReadError(f"{src}: frames of {w}x{h} = {w * h} pixels exceed --max-pixels {limit}")
    staged = _staging_folder(Path(masks_dir)) if masks_dir is not None else None
    run = _Pipeline(av, seg, container, stream, src, palette or seg.palette, alpha, batch, workers, staged,
                    progress, crf, preset, kw)
    t0 = time.perf_counter()
    torch_threads = torch.get_num_threads()
    if workers > 1:  # the model runs in a graph runtime's own threads; PyTorch's (pre- and post-processing)
        torch.set_num_threads(1)  # would only spin against them
    try:
        atomic_write(dst, run)
        if staged is not None:
            _replace_folder(staged, Path(masks_dir))
    finally:
        torch.set_num_threads(torch_threads)
        if staged is not None and staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {"frames": run.written, "seconds": seconds, "fps": run.written / max(seconds, 1e-9),
            "size": tuple(run.shown), "rate": float(run.rate)}


def _staging_folder(final: Path) -> Path:
    """A new empty folder beside `final` that the frame masks are written into (.NAME.XXXX.tmp)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))


def _replace_folder(new: Path, final: Path) -> None:
    """Put the folder `new` in place of `final` as a whole: a rerun on a shorter clip leaves none of the earlier
    run's frames behind. The old folder is moved aside first and removed after the rename."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Pipeline:
    """decode (a reader thread) -> infer in batches (this thread, or `workers` threads) -> overlay, encode and
    write masks (a writer thread). Any stage that fails records the error and sets `stop`; the others give up
    at their next queue operation, so no thread blocks forever. Called with the temp path to write to."""

    def __init__(self, av, seg, container, stream, src, palette, alpha, batch, workers, masks_dir, progress,
                 crf, preset, kw):
        self.av, self.seg, self.container, self.stream, self.src = av, seg, container, stream, src
        self.palette, self.overlay = palette, OverlayLUT(palette, alpha)
        self.batch, self.workers, self.masks_dir, self.progress = batch, workers, masks_dir, progress
        self.crf, self.preset, self.kw = crf, preset, kw
        self.rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        self.q_in: queue.Queue = queue.Queue(maxsize=2 * batch)
        self.q_out: queue.Queue = queue.Queue(maxsize=2 * batch)
        self.errors: list[BaseException] = []
        self.shown = [stream.codec_context.height, stream.codec_context.width]  # as displayed, set by the writer
        self.stop = threading.Event()
        self.written = 0
        self.decoded = 0
        self.resized = 0  # frames scaled to the first frame's size

    def put(self, q, item) -> bool:  # gives up when another stage has failed
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    def fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.stop.set()

    def read(self) -> None:
        from ..worksize import WorkSizeError

        first = None
        try:
            for frame in self.container.decode(self.stream):
                rgb = upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0) or 0)
                first = first or rgb.shape[:2]
                self.decoded += 1
                if rgb.shape[:2] != first:
                    rgb = self._to_first_size(rgb, first)
                if not self.put(self.q_in, (rgb, *self.seg.preprocess(rgb))):
                    return
        except WorkSizeError as e:  # frames no working size fits (e.g. 20000x12)
            self.fail(VideoReadError(f"{self.src}: frame {e}"))
        except Exception as e:  # a corrupt packet mid-file: stop and report
            self.fail(VideoReadError(f"cannot decode {self.src}: {e}"))
        self.put(self.q_in, _END)

    def _to_first_size(self, rgb: np.ndarray, first: tuple[int, int]) -> np.ndarray:
        """A frame whose size differs from the first one's (an adaptive stream switching quality) is resized to
        the first frame's size, as a player scales it into the same window; said once per video."""
        from PIL import Image

        if not self.resized:
            warnings.warn(f"{self.src}: frames change size mid-stream ({first[1]}x{first[0]} -> {rgb.shape[1]}x"
                          f"{rgb.shape[0]} at frame {self.decoded - 1}); they are scaled to the first frame's size",
                          Note, stacklevel=2)
        self.resized += 1
        return np.asarray(Image.fromarray(rgb).resize((first[1], first[0]), Image.BILINEAR))

    def _open_stream(self, out, rgb):
        """The output stream, sized by the first (rotated) frame."""
        fh, fw = _even(rgb).shape[:2]
        self.shown[:] = rgb.shape[:2]
        codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
        vstream = out.add_stream(codec, rate=self.rate)
        vstream.width, vstream.height, vstream.pix_fmt = fw, fh, "yuv420p"
        if codec == "libx264":
            vstream.options = {"preset": self.preset, "crf": str(self.crf), "threads": "1"}
        return vstream

    def write(self, tmp: str) -> None:
        from ..io import atomic_save, label_png

        out = self.av.open(tmp, "w", format="mp4")
        try:
            vstream = None
            while (item := self.get(self.q_out)) is not _END:
                rgb, fut, j, size, via = item
                label = self.seg.labels(fut.result()[j], size, via=via)
                if vstream is None:
                    vstream = self._open_stream(out, rgb)
                frame = self.av.VideoFrame.from_ndarray(_even(self.overlay(rgb, label)), format="rgb24")
                for packet in vstream.encode(frame):
                    out.mux(packet)
                if self.masks_dir is not None:
                    atomic_save(label_png(label, self.palette), Path(self.masks_dir) / f"{self.written:06d}.png",
                                compress_level=1)
                self.written += 1
                if self.progress:
                    self.progress(1)
            if vstream is not None and not self.stop.is_set():
                for packet in vstream.encode(None):  # flush the encoder
                    out.mux(packet)
        except Exception as e:
            self.fail(e)
        finally:
            try:
                out.close()  # muxes the trailer: on a full disk it fails here
            except Exception as e:
                self.fail(e)

    def _next_batch(self) -> tuple[list, bool]:
        items, done = [], False  # (rgb, normalised tensor, size) per frame
        while len(items) < self.batch and not done:
            item = self.get(self.q_in)
            done = item is _END
            if not done:
                items.append(item)
        return items, done

    def infer(self, pool) -> None:
        import torch

        done = False
        while not done and not self.stop.is_set():
            items, done = self._next_batch()
            if not items:
                break
            if pool or len({x.shape for _, x, _ in items}) > 1:  # overlapping calls, or the size changed
                jobs = [(x, size, [i]) for i, (_, x, size) in enumerate(items)]  # mid-stream: a frame a call
            else:
                jobs = [(torch.cat([x for _, x, _ in items]), items[0][2], list(range(len(items))))]
            for x, size, idx in jobs:
                if pool:
                    fut = pool.submit(self.seg.batch_scores, x, size, **self.kw)
                else:  # inference on this thread: an already finished Future
                    fut = Future()
                    fut.set_result(self.seg.batch_scores(x, size, **self.kw))
                for j, i in enumerate(idx):
                    self.put(self.q_out, (items[i][0], fut, j, size, tuple(x.shape[-2:])))

    def __call__(self, tmp: str) -> None:
        if self.masks_dir is not None:
            Path(self.masks_dir).mkdir(parents=True, exist_ok=True)
        reader = threading.Thread(target=self.read, name="attnseg-video-read", daemon=True)
        writer = threading.Thread(target=self.write, args=(tmp,), name="attnseg-video-write", daemon=True)
        reader.start()
        writer.start()
        pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="attnseg-video-infer") if self.workers > 1
                else None)
        try:
            self.infer(pool)
            self.put(self.q_out, _END)
            writer.join()
        finally:
            self.stop.set()
            if pool:
                pool.shutdown(cancel_futures=True)
            writer.join()
            reader.join(timeout=5)
            self.container.close()
        if self.errors:
            raise self.errors[0]
        if self.written == 0:
            raise VideoReadError(f"{self.src} has no decodable frames")

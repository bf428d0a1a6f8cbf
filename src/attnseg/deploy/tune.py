"""`--backend auto` by measurement: which backend and precision runs a model fastest on this machine.

The candidates are the backend x precision pairs whose runtime is installed, whose kernels this CPU has
(`Backend.unsupported`) and whose accuracy is known to hold: exact fp32 paths always; for a shipped model, any
pair whose recorded CamVid test mIoU (pretrained/precision.json) is within `TOLERANCE` points of fp32. onnxruntime
fp32 also runs as a graph pinned at the working size. Each candidate is prepared and timed briefly at the
model's working size (`measure`), and the winner is kept in $ATTNSEG_CACHE/choices.json under a key made of the
model's weights, the CPU's model and kernel flags, the thread count, the size and the libraries' versions: the
next run on this machine reads it and prepares only the winner.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

from .backends import BACKENDS, Source
from .backends.cpu import Machine, versions
from .graphs import cache_root, keep_entry

TOLERANCE = 0.3  # CamVid mIoU points a candidate may lose against fp32 and still be chosen
EXACT = {"eager-fp32", "onnx-fp32", "openvino-fp32"}  # the same function as the model, to float rounding
AGREEMENT = 0.99  # for a model without a record: pixel agreement with fp32 on calibration images (calibrate.py)
EAGER_LAST = ("timed only where no graph runtime is eligible: on the CPUs measured (AVX2 only, AVX512-BF16) eager "
              "PyTorch ran at 0.15-0.5x the fastest graph path for every shipped model")
PINNED_FIRST = ("the pinned graph (onnx-fp32-fixed) runs this same graph: the working size in a session pinned to "
                "it, every other size in this dynamic one")
BF16_FIRST = ("OpenVINO bf16 is eligible on this CPU's bf16 kernels: on the AVX512-BF16 CPU measured it ran at "
              "1.45-2.0x OpenVINO fp32 for every shipped model, so fp32 is timed only where bf16 is not eligible")
NOT_READY = ("needs a one-time export or conversion (30-60 s on 2 cores) and ready graphs are eligible: "
             "`attnseg tune MODEL` makes it and times it")
BEATEN = (EAGER_LAST, PINNED_FIRST, BF16_FIRST)  # reasons a runnable candidate is not timed
NO_BF16 = "this CPU has no bf16 kernels (AVX512-BF16 or AMX): bf16 would run emulated, slower than fp32"
EARLY_STOP = 1.5  # a first timed run this many times the fastest run so far ends a candidate's timing
DUEL = 3  # blocks of 2 runs more for each finalist, taken in turn
FINALISTS = 3  # at most this many go on to the run-off: the fastest, and those within FINAL_RANGE of it
FINAL_RANGE = 1.15  # a candidate this many times slower than the fastest in the screen is not a close call


@lru_cache(maxsize=1)
def recorded() -> dict:
    """{shipped model: {"eager-fp32": mIoU, "onnx-int8": ..., "openvino-bf16": ..., ...}} (CamVid test; written
    by scripts/precision_record.py from results/precision/)."""
    from ..pretrained import PRETRAINED_DIR

    try:
        return json.loads((PRETRAINED_DIR / "precision.json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    fixed: bool = False  # pinned at the working size (onnxruntime)

    @property
    def record_key(self) -> str:
        return f"{self.backend}-{self.precision}"

    def __str__(self) -> str:
        return self.record_key + ("-fixed" if self.fixed else "")

    @classmethod
    def parse(cls, text: str) -> Candidate:
        fixed = text.endswith("-fixed")
        backend, _, precision = text.removesuffix("-fixed").partition("-")
        return cls(backend, precision, fixed)


def record_allows(record: dict | None, key: str) -> str | None:
    """None when the record lets candidate `key` (e.g. "onnx-int8") stand in for fp32, else why not."""
    if key in EXACT:
        return None
    fp32, value = (record or {}).get("eager-fp32"), (record or {}).get(key)
    if fp32 is None or value is None:
        return ("no accuracy record for this model (calibration images measure one: attnseg tune MODEL "
                "--calibration IMAGES)")
    if fp32 - value > TOLERANCE:
        return f"CamVid mIoU {value:.2f} vs fp32 {fp32:.2f}: more than {TOLERANCE} points lost"
    return None


def candidates(source: Source, machine: Machine, precision: str | None = None,
               agreement: dict | None = None, convert: bool = True) -> tuple[list[Candidate], dict[str, str]]:
    """(eligible candidates, {candidate: why not} for the others). precision: only that precision (a user's
    --dtype). agreement: {record key: pixel agreement with fp32 on the user's calibration images} (default: the
    source's, deploy.calibrate; makes those eligible at >= AGREEMENT for a model without a record).
    convert=False: where a graph candidate is ready (`Backend.ready`), those that need an export or conversion
    first are left out (a first run), as `NOT_READY` says."""
    out, skipped = [], {}
    agreement = source.agreement if agreement is None else agreement
    for backend in BACKENDS.values():
        missing = backend.missing()
        for p in backend.precisions:
            c = Candidate(backend.name, p)
            if precision and p != precision:
                continue
            why = missing or backend.unsupported(p, machine, source)
            if why is None and "bf16" in p and not machine.bf16:
                why = NO_BF16
            if why is None and c.record_key not in EXACT and not precision:
                if c.record_key in (agreement or {}):
                    if agreement[c.record_key] < AGREEMENT:
                        why = (f"agrees with fp32 on {100 * agreement[c.record_key]:.2f}% of the calibration pixels "
                               f"(< {100 * AGREEMENT:.0f}%)")
                else:
                    why = record_allows(source.record, c.record_key)
            if why:
                skipped[str(c)] = why
                continue
            out.append(c)
            if c.backend == "onnx" and p == "fp32":
                out.append(Candidate("onnx", "fp32", fixed=True))
    names = {str(c) for c in out}
    dominated = {}  # candidates another one eligible here is known to beat: not timed, said why
    if any(c.backend != "eager" for c in out):
        dominated.update({str(c): EAGER_LAST for c in out if c.backend == "eager"})
    if "onnx-fp32-fixed" in names:
        dominated["onnx-fp32"] = PINNED_FIRST
    if "openvino-bf16" in names and not precision:
        dominated["openvino-fp32"] = BF16_FIRST
    skipped.update({k: v for k, v in dominated.items() if k in names})
    out = [c for c in out if str(c) not in dominated]
    ready = {str(c): BACKENDS[c.backend].ready(source, c.precision) for c in out}
    if not convert and any(ready[str(c)] for c in out if c.backend != "eager"):
        skipped.update({k: NOT_READY for k, r in ready.items() if not r})
        out = [c for c in out if ready[str(c)]]
    return out, skipped


class Timer:
    """Runs of one prepared candidate at `size` (h, w), batch 1, under autocast for an eager bf16 model."""

    def __init__(self, model, size: tuple[int, int], kw: dict):
        import torch

        self.model, self.kw, self.times = model, kw, []
        self.x = torch.randn(1, 3, *size)
        self.autocast = getattr(model, "precision", "fp32") == "bf16" and isinstance(model, torch.nn.Module)

    def run(self, n: int = 1) -> None:
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            for _ in range(n):
                t0 = time.perf_counter()
                self.model(self.x, **self.kw)
                self.times.append(time.perf_counter() - t0)

    def images_per_s(self) -> float:
        return 1.0 / statistics.median(self.times)


def measure(model, size: tuple[int, int], best_s: float | None = None, **kw) -> Timer:
    """Time a candidate: two warm-up runs (kernels are compiled and buffers made for the shape; onnxruntime plans
    its memory on the first run and uses the plan from the second: not counted), one run, and when that run is
    within `EARLY_STOP` x `best_s` (the fastest so far) one more; a candidate slower than that cannot win and
    stops after one timed run."""
    timer = Timer(model, size, kw)
    timer.run(2)
    timer.times.clear()
    timer.run()
    if best_s is None or timer.times[0] <= EARLY_STOP * best_s:
        timer.run()
    return timer


def choice_key(source: Source, machine: Machine, threads: int | None, size, precision: str | None) -> str:
    """The key a choice is kept under (threads None: torch's thread count, which the runtimes default to)."""
    import torch

    threads = threads or torch.get_num_threads()
    what = json.dumps([source.key, source.isr, machine.cpu, machine.flags, machine.cores, threads, list(size),
                       precision, versions(), sorted((source.agreement or {}).items())], sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:24]


def choices_file():
    return cache_root() / "choices.json"


def read_choice(key: str) -> dict | None:
    """The kept choice for `key`, if the file parses and holds one (anything else: measured again)."""
    try:
        entry = json.loads(choices_file().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("choice"), str):
        return None
    return entry


def keep_choice(key: str, entry: dict) -> None:
    """Add `entry` under `key` (written whole to a temp file, then renamed: never half-written). A cache that
    cannot be written is skipped: the next run measures again."""
    keep_entry(choices_file(), key, entry)


def tune(source: Source, cands: list[Candidate], threads, size, kw: dict):
    """Prepare and time every candidate, then the close calls again: the fastest and those within `FINAL_RANGE`
    of it (at most `FINALISTS`) in turn, `DUEL` blocks of runs each (a short screen can mistake one for another
    when they are close; a runtime's pool threads spin for a while after its runs, so each block starts with a
    run that is not counted). Returns ([(candidate, images/s or why it failed)], fastest first; the winner's
    prepared model)."""
    from .backends.base import BackendError

    rows, timers = [], {}
    for c in sorted(cands, key=_likely_fastest_first):  # so that slow ones stop after one timed run
        try:
            model = BACKENDS[c.backend].prepare(source, c.precision, threads, size if c.fixed else None)
            best = min((min(t.times) for t in timers.values()), default=None)
            timers[c] = measure(model, size, best, **kw)
            rows.append(c)
        except (BackendError, ImportError, RuntimeError, ValueError, OSError) as e:
            rows.append((c, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
        model = None
        if len(timers) > FINALISTS:  # keep the fastest prepared, drop the rest
            slowest = min(timers, key=lambda k: timers[k].images_per_s())
            speed = timers.pop(slowest).images_per_s()
            rows = [(slowest, speed) if r == slowest else r for r in rows]
    fastest = min((min(t.times) for t in timers.values()), default=0.0)  # best runs: one slow run is noise
    for c in [c for c, t in timers.items() if min(t.times) > FINAL_RANGE * fastest]:
        speed = timers.pop(c).images_per_s()
        rows = [(c, speed) if r == c else r for r in rows]
    if len(timers) > 1:  # the finalists are compared on the run-off's runs alone: the same minutes for each
        for t in timers.values():
            t.times.clear()
        for _ in range(DUEL):  # in blocks: one untimed run first, while the last finalist's idle threads settle
            for t in timers.values():
                t.run()
                t.times.pop()
                t.run(2)
    rows = [(r, timers[r].images_per_s()) if isinstance(r, Candidate) else r for r in rows]
    rows.sort(key=lambda r: -r[1] if isinstance(r[1], float) else 0)
    winner = timers.get(rows[0][0]) if rows and isinstance(rows[0][1], float) else None
    return rows, winner.model if winner else None


def _likely_fastest_first(c: Candidate) -> int:
    """int8 and bf16 before fp32, graph runtimes before eager (an order only: every candidate is timed)."""
    return (c.backend == "eager") * 10 + (c.precision == "fp32") * 2 + c.fixed


def machine_line(machine: Machine, threads) -> str:
    return f"{machine.describe()}, {threads or os.cpu_count()} thread(s)"


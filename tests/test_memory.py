"""The process's heap ceiling (attnseg.memory): a model run on a stream of new sizes keeps its resident memory
under the ceiling set, because freed heap is given back after a run once the process is above it.

The stream runs in a child under a 6 GB address-space cap: a regression fails the test, not the machine."""
import json
import subprocess
import sys
from pathlib import Path

from attnseg import memory
from tests.test_worksize import capped

ROOT = Path(__file__).resolve().parents[1]

STREAM = """
import json, sys
import numpy as np, torch
import attnseg
from attnseg import memory

torch.set_num_threads(2)
headroom = float(sys.argv[1])
memory.set_ceiling(headroom_mb=headroom)
seg = attnseg.Segmenter(attnseg.create_model("sanet-effnet-lite0", num_classes=11).eval(), size=256)
rng = np.random.default_rng(0)
after = []
for k in range(24):
    long = 320 + 24 * k
    seg.predict(rng.integers(0, 255, (256, long, 3) if k % 2 else (long, 256, 3), dtype=np.uint8))
    after.append(memory.resident_bytes())
print(json.dumps({"after": after, "ceiling": memory._state["ceiling"], "trims": memory.trims()}))
"""


def _stream(headroom_mb: float) -> dict:
    r = subprocess.run([sys.executable, "-c", STREAM, str(headroom_mb)], capture_output=True, text=True,
                       cwd=ROOT, preexec_fn=capped(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_stream_of_new_sizes_stays_under_the_heap_ceiling():
    res = _stream(48)
    assert res["trims"] >= 1  # the stream went above the ceiling, and freed heap was given back
    # after the first run (which sets the ceiling) every run ends near it: what stays above is what the run's
    # last steps allocated after the trim and the heap's top, which the trim keeps (measured: at most ~25 MB;
    # without the ceiling the same stream ends ~670 MB above it)
    over = [a - res["ceiling"] for a in res["after"][1:]]
    assert max(over) < 96 * 2**20, [o >> 20 for o in over]


def test_no_trim_under_the_ceiling():
    memory.set_ceiling(mb=1e7)
    try:
        assert memory.after_run() is False
        before = memory.trims()
        memory.set_ceiling(mb=1)  # above any ceiling: gives freed heap back
        assert memory.after_run() is True and memory.trims() == before + 1
    finally:
        memory.set_ceiling()


def test_the_default_ceiling_is_set_by_the_first_run():
    memory.set_ceiling(headroom_mb=100)
    try:
        assert memory._state["ceiling"] is None
        assert memory.after_run() is False  # the first run only sets it
        assert abs(memory._state["ceiling"] - memory.resident_bytes() - 100 * 2**20) < 64 * 2**20
    finally:
        memory.set_ceiling()

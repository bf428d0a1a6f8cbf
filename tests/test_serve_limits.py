"""What one client, or a crowd of them, cannot do to `attnseg serve`: a real server (uvicorn, our h11 protocol)
on 127.0.0.1 with a tiny model, sent what hostile clients send. Memory is read from the server's own
/proc/PID/status (VmHWM, its peak), never timed; every loop is bounded in count and time."""
import asyncio
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import free_port, png_bytes, wait_until_up

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import attnseg  # noqa: E402
from attnseg.serve.app import Settings, create_app, load_models  # noqa: E402
from attnseg.serve.budget import BudgetBusy, BudgetTooSmall, MemoryBudget  # noqa: E402
from attnseg.serve.limits import printable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    return str(attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=3), path,
                                  class_names=["sky", "road", "car"], short_side=48))


def start(tiny, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "serve", "--port", str(port), "--backend", "eager",
                             "--model", tiny, "--threads", "1", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def stop(proc) -> str:
    proc.terminate()
    try:
        return proc.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def metric(port: int, name: str, **labels) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(f"{name}{{{want}}}"))


def raw_exchange(port: int, data: bytes, wait: float = 15.0) -> bytes:
    """Send raw bytes on one connection and read until the server closes it (or `wait` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def big_png(w: int, h: int) -> bytes:
    """A w x h RGB PNG of a smooth gradient: a few hundred KB on disk, w * h * 3 bytes decoded."""
    row = np.linspace(0, 255, w, dtype=np.float32)
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = row
    img[..., 1] = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    img[..., 2] = 128
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_crowd_of_large_uploads_stays_within_the_memory_budget(tiny):
    """12 clients at once, each with a 12 MP PNG inside --max-pixels: every answer is 200 or a 503 with
    Retry-After (never 415 'not enough memory', 504 or 500), and the server's peak memory grows by about its
    budget, not by 12 decodes (12 x ~250 MB here without the budget)."""
    data = big_png(4000, 3000)
    proc, port = start(tiny, "--memory-mb", "450", "--decode-slots", "2", "--max-pixels", "20000000")
    try:
        base = status_kb(proc.pid, "VmRSS")
        results = []

        def client():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/api/segment?format=json", body=data, headers={"Content-Type": "image/png"})
            r = c.getresponse()
            results.append((r.status, r.getheader("Retry-After"), r.read()))

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        peak = status_kb(proc.pid, "VmHWM")
    finally:
        err = stop(proc)
    statuses = sorted(s for s, _, _ in results)
    assert len(results) == 12 and set(statuses) <= {200, 503}, (statuses, [b[:200] for _, _, b in results])
    assert statuses.count(200) >= 2, statuses
    assert all(ra for s, ra, _ in results if s == 503)
    grown_mb = (peak - base) / 1024
    assert grown_mb < 450 + 250, f"peak grew by {grown_mb:.0f} MB over a 450 MB budget"
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.slow
@pytest.mark.e2e
def test_request_heads_are_bounded_and_timed(tiny):
    proc, port = start(tiny, "--header-timeout", "1.5")
    try:
        # 64 KB of headers: refused while they are read (431, one JSON line), not buffered whole
        huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000)
                                                                 for i in range(64)) + b"\r\n"
        answer = raw_exchange(port, huge)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"headers over the limit" in answer
        # many small headers: 431 too
        many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
        assert raw_exchange(port, many).startswith(b"HTTP/1.1 431")
        # a head that never ends: 408 after the header timeout; an idle new connection is closed
        t0 = time.monotonic()
        slow = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait=20)
        assert slow.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 15, slow[:200]
        assert raw_exchange(port, b"", wait=20) == b""
        # the server still answers, and its open-file soft limit was raised to the hard one
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft, hard = next(ln.split()[3:5] for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert soft == hard, limits
    finally:
        err = stop(proc)
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.slow
@pytest.mark.e2e
def test_idle_connections_are_closed_and_others_served(tiny):
    """300 connections that never send a head do not keep a normal client out, and are closed by the header
    timeout."""
    proc, port = start(tiny, "--header-timeout", "2")
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
        time.sleep(3.5)
        closed = 0
        for s in idle:
            s.settimeout(5)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == 300
    finally:
        for s in idle:
            s.close()
        stop(proc)


@pytest.mark.slow
@pytest.mark.e2e
def test_disconnects_and_odd_paths_leave_clean_logs(tiny):
    proc, port = start(tiny)
    try:
        # a client that leaves mid-upload: counted as 499, no traceback, no 500
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /api/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000000\r\n\r\n" + b"\x89PNG" + b"\x00" * 5000)
                time.sleep(0.3)
        deadline = time.monotonic() + 20
        while metric(port, "attnseg_requests_total", path="/api/segment", status="499") < 3:
            assert time.monotonic() < deadline, "disconnects not counted"
            time.sleep(0.2)
        assert metric(port, "attnseg_requests_total", path="/api/segment", status="500") == 0
        # a URL whose path holds a newline and an escape sequence: one log line, escaped
        raw_exchange(port, b"GET /x%0Aforged%20200%20line%1B[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        err = stop(proc)
    assert "Traceback" not in err and "ClientDisconnect" not in err, err[-3000:]
    assert not any(ln.startswith("forged") for ln in err.splitlines()), err[-2000:]
    assert "/x\\nforged 200 line\\x1b[31m" in err, err[-2000:]


def test_printable_escapes_control_characters():
    assert printable("/a\nb\r\x1b[0m\u2028c") == "/a\\nb\\r\\x1b[0m\\u2028c"
    assert printable("/plain path") == "/plain path"
    assert len(printable("x" * 1000)) == 200


def test_memory_budget_waits_refuses_and_always_gives_back():
    async def scenario():
        b = MemoryBudget(100, slots=2)
        with pytest.raises(BudgetTooSmall, match="over the server's memory budget"):
            async with b.reserve(101, 1.0):
                pass
        async with b.reserve(60, 1.0) as hold:
            with pytest.raises(BudgetBusy, match="retry shortly"):  # 60 + 50 > 100: no room within the wait
                async with b.reserve(50, 0.2):
                    pass
            hold.decoded(keep=10)  # decoding done: 10 kept, the slot and 50 returned
            async with b.reserve(50, 0.2):
                assert (b.used, b.decoding) == (60, 1)
        assert (b.used, b.decoding) == (0, 0)

        # a waiter is woken when room is given back, and a cancelled request gives back what it held
        async def holder(started):
            async with b.reserve(80, 1.0):
                started.set()
                await asyncio.sleep(10)

        started = asyncio.Event()
        task = asyncio.ensure_future(holder(started))
        await started.wait()
        waiter = asyncio.ensure_future(_reserve_and_report(b, 50, 5.0))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        task.cancel()
        assert await waiter == (50, 1)
        assert (b.used, b.decoding) == (0, 0)
        # slots: a third decode waits although bytes remain
        async with b.reserve(1, 1.0), b.reserve(1, 1.0):
            with pytest.raises(BudgetBusy):
                async with b.reserve(1, 0.1):
                    pass

    asyncio.run(scenario())


async def _reserve_and_report(b, n, wait):
    async with b.reserve(n, wait):
        return b.used, b.decoding


@pytest.fixture(scope="module")
def cors_client(tiny):
    app = create_app(load_models([tiny]), Settings(max_upload_mb=1, cors="https://example.org"))
    with TestClient(app) as c:
        yield c


def test_cors_headers_on_every_answer(cors_client):
    origin = {"Origin": "https://example.org"}
    big = cors_client.post("/api/segment", content=b"\x89PNG" + b"\x00" * (2 << 20),
                           headers={"Content-Type": "image/png", **origin})
    assert big.status_code == 413 and big.headers.get("access-control-allow-origin") == "https://example.org"
    bad = cors_client.post("/api/segment", content=b"not an image", headers={"Content-Type": "image/png", **origin})
    assert bad.status_code == 415 and bad.headers.get("access-control-allow-origin") == "https://example.org"


def test_deeply_nested_labels_are_a_422(cors_client):
    deep = "[" * 100_000 + "]" * 100_000
    r = cors_client.post("/api/segment", files={"image": ("a.png", png_bytes(np.zeros((8, 8, 3), np.uint8)),
                                                          "image/png")}, data={"labels": deep})
    assert r.status_code == 422 and r.json()["error"].startswith("labels:"), r.text[:300]
    body = json.dumps({"image": "", "labels": "x"})[:-1] + ', "model": ' + "[" * 50_000 + "]" * 50_000 + "}"
    r = cors_client.post("/api/segment", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text[:300]

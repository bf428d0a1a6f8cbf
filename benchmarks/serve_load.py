"""Load benchmark for `attnseg serve`: N concurrent HTTP clients for T seconds on loopback, with
micro-batching on (--max-wait-ms 10) and off (--max-wait-ms 0) in one run.

    python benchmarks/serve_load.py --clients 16 --seconds 60 --json results/serve_load.json

Each client posts CamVid test images (../shared/data/camvid/test) to /api/segment (format=png) in a loop.
Prints, per setting: throughput (images/s), p50/p90/p99 latency, responses by status, client timeouts, and the
server's RSS after warm-up, at the end, and its peak (sampled every second from /proc).
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(args, url: str, images: list[bytes], seconds: float, pid: int):
    """`args.clients` threads posting images for `seconds`; 503s are retried after Retry-After."""
    stop = time.perf_counter() + seconds
    lat, status, lock, timeouts, rss_samples = [], {}, threading.Lock(), [0], []

    def client(k: int):
        with httpx.Client(timeout=args.client_timeout) as c:
            i = k
            while time.perf_counter() < stop:
                img = images[i % len(images)]
                i += args.clients
                t0 = time.perf_counter()
                try:
                    r = c.post(url + "/api/segment", files={"image": ("a.png", img)}, data={"model": args.model})
                except httpx.TimeoutException:
                    with lock:
                        timeouts[0] += 1
                    continue
                with lock:
                    status[r.status_code] = status.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t0)
                if r.status_code == 503:
                    time.sleep(float(r.headers.get("Retry-After", "1")))

    def sampler():
        while time.perf_counter() < stop:
            rss_samples.append(rss_mb(pid))
            time.sleep(1)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    threads.append(threading.Thread(target=sampler))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, status, timeouts[0], rss_samples, time.perf_counter() - t0


def run(args, wait_ms: float, images: list[bytes]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "attnseg.cli", "serve", "--model", args.model, "--port", str(port),
           "--max-wait-ms", str(wait_ms), "--max-batch", str(args.max_batch), "--queue", str(args.queue)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        load(args, url, images, args.warmup, proc.pid)  # warm-up: the same load, so allocations settle
        rss_warm = rss_mb(proc.pid)
        lat, status, timeouts, rss_samples, elapsed = load(args, url, images, args.seconds, proc.pid)
        time.sleep(2)
        rss_end = rss_mb(proc.pid)
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
        return {"max_wait_ms": wait_ms, "images_per_s": len(lat) / elapsed, "ok": len(lat),
                "p50_ms": 1000 * q[49], "p90_ms": 1000 * q[89], "p99_ms": 1000 * q[98],
                "status": {str(k): v for k, v in sorted(status.items())}, "client_timeouts": timeouts,
                "rss_warm_mb": rss_warm, "rss_end_mb": rss_end, "rss_peak_mb": max(rss_samples + [rss_warm])}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sanet-effnet-lite0-camvid")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=15, help="seconds of the same load before measuring")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--queue", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--client-timeout", type=float, default=120)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid" / "test"))
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    files = sorted(Path(args.data).glob("*.png"))[: args.images]
    if not files:
        sys.exit(f"no images in {args.data}")
    images = [f.read_bytes() for f in files]
    rows = [run(args, w, images) for w in (10.0, 0.0)]
    print(f"{args.clients} clients x {args.seconds:g} s, {args.model}, queue {args.queue}, max batch {args.max_batch}")
    print(f"{'batching':<10} {'img/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'statuses':<22} {'timeouts':>8} "
          f"{'RSS warm':>9} {'RSS end':>8} {'RSS peak':>9}")
    for r in rows:
        name = f"on ({r['max_wait_ms']:g} ms)" if r["max_wait_ms"] else "off"
        print(f"{name:<10} {r['images_per_s']:>7.2f} {r['p50_ms']:>8.0f} {r['p90_ms']:>8.0f} {r['p99_ms']:>8.0f} "
              f"{json.dumps(r['status']):<22} {r['client_timeouts']:>8} {r['rss_warm_mb']:>9.0f} {r['rss_end_mb']:>8.0f} "
              f"{r['rss_peak_mb']:>9.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

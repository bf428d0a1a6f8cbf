"""Load benchmark for `attnseg serve`: N concurrent HTTP clients for T seconds on loopback, with
micro-batching on (--max-wait-ms 10) and off (--max-wait-ms 0) in one run; or, with --lseg-editors E,
without and with E clients editing LSeg labels as the page does (each edit's request abandoned after
--edit-abort-ms unless it is the last of a burst of five), micro-batching off, in one run.

    python benchmarks/serve_load.py --clients 16 --seconds 60 --json results/serve/serve_load.json
    python benchmarks/serve_load.py --clients 8 --lseg-editors 4 --json results/serve/serve_load_lseg.json
    python benchmarks/serve_load.py --clients 8 --lseg-editors 2 --new-sizes --new-labels \
        --json results/serve/serve_load_varied.json

--new-sizes: every request an image of a working size the server has not seen (short side 360, the other side
360-1080 px, landscape and portrait: 1,440 sizes), so memory kept per size would show as growth; --new-labels:
every LSeg edit names a label never sent before. Both print the server's RSS through the run (flat after
warm-up when what the server keeps is bounded).

Each client posts CamVid test images (../shared/data/camvid/test) to /api/segment (format=png) in a loop.
Prints, per setting: throughput (images/s), p50/p90/p99 latency, responses by status, client timeouts, and the
server's RSS after warm-up, at the end, and its peak (sampled every second from /proc).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from live_server import live_server  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import machine  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sized_pool(images: list[bytes]) -> list[bytes]:
    """1,440 PNGs whose working sizes all differ: CamVid images scaled to 360 x W and H x 360, W, H in 360-1080."""
    import io

    from PIL import Image

    shapes = [(360, w) for w in range(360, 1080)] + [(h, 360) for h in range(361, 1081)]
    order = sorted(range(len(shapes)), key=lambda i: (i * 7919) % len(shapes))  # sizes mixed, not a ramp
    src = [Image.open(io.BytesIO(b)).convert("RGB") for b in images[:8]]
    out = []
    for n, i in enumerate(order):
        h, w = shapes[i]
        buf = io.BytesIO()
        src[n % len(src)].resize((w, h), Image.BILINEAR).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def load(args, url: str, images: list[bytes], seconds: float, pid: int):
    """`args.clients` threads posting images for `seconds`; 503s are retried after Retry-After. With
    --new-sizes the clients take the images in turn from one counter, so no size is sent twice until all were."""
    stop = time.perf_counter() + seconds
    lat, status, lock, timeouts, rss_samples = [], {}, threading.Lock(), [0], []

    def next_index(k: int, i: int) -> int:
        if not args.new_sizes:
            return i
        with lock:
            args.sent_sizes += 1
            return args.sent_sizes

    def client(k: int):
        with httpx.Client(timeout=args.client_timeout) as c:
            i = k
            while time.perf_counter() < stop:
                img = images[next_index(k, i) % len(images)]
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

    edits = {"sent": 0, "abandoned_by_client": 0, "finished": 0}

    def editor(k: int):
        """Label edits in bursts of five: the first four abandoned (a newer edit supersedes them)."""
        words = ["road", "car", "tree", "sky", "person", "building", "bicycle", "sign", "pole", "wall"]
        with httpx.Client() as c:
            n = k
            while time.perf_counter() < stop:
                n += 1
                labels = json.dumps(words[: 3 + n % 7] + ["other"])
                if args.new_labels:  # a label never sent before, in every request
                    with lock:
                        args.sent_labels += 1
                        labels = json.dumps(["road", "car", f"thing number {args.sent_labels}", "other"])
                last = n % 5 == 0 or args.new_labels
                timeout = httpx.Timeout(args.client_timeout if last else args.edit_abort_ms / 1000)
                try:
                    c.post(url + "/api/segment", files={"image": ("a.png", images[n % len(images)])},
                           data={"model": args.lseg_model, "labels": labels, "format": "json"}, timeout=timeout)
                    with lock:
                        edits["finished"] += 1
                except httpx.TimeoutException:
                    with lock:
                        edits["abandoned_by_client"] += 1
                with lock:
                    edits["sent"] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    threads += [threading.Thread(target=editor, args=(k,)) for k in range(args.editors_now)]
    threads.append(threading.Thread(target=sampler))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, status, timeouts[0], rss_samples, time.perf_counter() - t0, edits


def dropped(url: str) -> float:
    """Requests the server dropped from its queue because their client had gone (from /metrics)."""
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("attnseg_abandoned_total"))


def run(args, wait_ms: float, images: list[bytes], editors: int = 0) -> dict:
    models = [args.model] + ([args.lseg_model] if args.lseg_editors else [])
    cmd = [*[a for m in models for a in ("--model", m)], "--max-wait-ms", str(wait_ms), "--max-batch",
           str(args.max_batch), "--queue", str(args.queue)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.backend:
        cmd += ["--backend", args.backend]
    with live_server(cmd, ready="/healthz") as (url, proc):
        args.editors_now = editors
        load(args, url, images, args.warmup, proc.pid)  # warm-up: the same load, so allocations settle
        rss_warm = rss_mb(proc.pid)
        before = dropped(url)
        lat, status, timeouts, rss_samples, elapsed, edits = load(args, url, images, args.seconds, proc.pid)
        time.sleep(2)
        rss_end = rss_mb(proc.pid)
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
        quarters = [rss_samples[min(len(rss_samples) - 1, len(rss_samples) * q // 4)] for q in (1, 2, 3)] \
            if rss_samples else []
        return {"max_wait_ms": wait_ms, "lseg_editors": editors, "edits": edits, "dropped_by_server": dropped(url) - before,
                "rss_quarters_mb": quarters, "sizes_sent": args.sent_sizes, "labels_sent": args.sent_labels,
                "images_per_s": len(lat) / elapsed, "ok": len(lat),
                "p50_ms": 1000 * q[49], "p90_ms": 1000 * q[89], "p99_ms": 1000 * q[98],
                "status": {str(k): v for k, v in sorted(status.items())}, "client_timeouts": timeouts,
                "rss_warm_mb": rss_warm, "rss_end_mb": rss_end, "rss_peak_mb": max(rss_samples + [rss_warm])}


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
    ap.add_argument("--backend", default=None, help="the server's --backend (default: its own, auto)")
    ap.add_argument("--lseg-editors", type=int, default=0, help="compare 0 and this many label-editing clients")
    ap.add_argument("--lseg-model", default="lseg-effnet-lite0-camvid")
    ap.add_argument("--edit-abort-ms", type=float, default=300, help="a superseded edit's request is abandoned after")
    ap.add_argument("--new-sizes", action="store_true", help="every request a working size not sent before")
    ap.add_argument("--new-labels", action="store_true", help="every LSeg edit a label not sent before")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.sent_sizes = args.sent_labels = 0
    files = sorted(Path(args.data).glob("*.png"))[: args.images]
    if not files:
        sys.exit(f"no images in {args.data}")
    images = [f.read_bytes() for f in files]
    if args.new_sizes:
        images = sized_pool(images)
    if args.new_sizes or args.new_labels:  # one setting: what the server keeps as sizes and labels keep coming
        rows = [run(args, 0.0, images, args.lseg_editors)]
    elif args.lseg_editors:
        rows = [run(args, 0.0, images, e) for e in (0, args.lseg_editors)]
    else:
        rows = [run(args, w, images) for w in (10.0, 0.0)]
    print(f"{args.clients} clients x {args.seconds:g} s, {args.model}, queue {args.queue}, max batch {args.max_batch}")
    print(f"{'batching':<10} {'img/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'statuses':<22} {'timeouts':>8} "
          f"{'RSS warm':>9} {'RSS end':>8} {'RSS peak':>9}")
    for r in rows:
        name = f"on ({r['max_wait_ms']:g} ms)" if r["max_wait_ms"] else "off"
        if args.lseg_editors:
            name = f"{r['lseg_editors']} editors"
        print(f"{name:<10} {r['images_per_s']:>7.2f} {r['p50_ms']:>8.0f} {r['p90_ms']:>8.0f} {r['p99_ms']:>8.0f} "
              f"{json.dumps(r['status']):<22} {r['client_timeouts']:>8} {r['rss_warm_mb']:>9.0f} {r['rss_end_mb']:>8.0f} "
              f"{r['rss_peak_mb']:>9.0f}")
        if args.new_sizes or args.new_labels:
            print(f"{'':<10} RSS at each quarter of the run: {', '.join(f'{v:.0f}' for v in r['rss_quarters_mb'])} "
                  f"MB; {r['sizes_sent']} image sizes and {r['labels_sent']} new labels sent (warm-up included)")
        if args.lseg_editors and r["lseg_editors"]:
            e = r["edits"]
            print(f"{'':<10} edits: {e['sent']} sent, {e['abandoned_by_client']} abandoned by their client, "
                  f"{e['finished']} answered; {r['dropped_by_server']:.0f} dropped from the queue unrun")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

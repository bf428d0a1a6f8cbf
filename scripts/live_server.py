"""`attnseg serve` on a free loopback port for the scripts and benchmarks that talk to a live server.

    with live_server(["--model", "sanet-effnet-lite0-camvid"]) as (url, proc):
        ...
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def live_server(args: list[str], executable: list[str] | None = None, ready: str = "/readyz", wait_s: float = 300,
                stderr=subprocess.DEVNULL):
    """Start `attnseg serve ARGS --port P` (with `executable`, default this Python's `-m attnseg.cli`), wait until
    `ready` answers, yield (url, process), stop it. RuntimeError when it exits or stays silent past `wait_s`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [*(executable or [sys.executable, "-m", "attnseg.cli"]), "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                urllib.request.urlopen(url + ready, timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"attnseg serve {' '.join(args)} did not come up") from None
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)

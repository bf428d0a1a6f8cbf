"""Make the docs' screenshots of the page: start `attnseg serve` on a free port, upload a CamVid example in
Debian's headless Chromium at a desktop's 1280x800 and a phone's 390x844, set the overlay opacity and save
results/serve/serve_screenshot.png and serve_screenshot_phone.png.

    .venv/bin/python scripts/screenshot_serve.py [--out results/serve/serve_screenshot.png]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from live_server import live_server

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "serve" / "serve_screenshot.png"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with live_server(["--model", "sanet-effnet-lite0-camvid"], ready="/healthz") as (url, _):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        headless=True, args=FLAGS)
            phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                     "device_scale_factor": 2}
            for out, ctx in ((args.out, {"viewport": {"width": 1280, "height": 800}}),
                             (args.out.replace(".png", "_phone.png"), phone)):
                page = browser.new_context(**ctx).new_page()
                page.goto(url + "/")
                page.wait_for_selector("#model option", state="attached")
                page.set_input_files("#file", str(EXAMPLE))
                page.wait_for_function("document.getElementById('status').textContent.includes('round trip')",
                                       timeout=120_000)
                page.fill("#opacity", "70")
                page.dispatch_event("#opacity", "input")
                page.screenshot(path=out, full_page=True)
                print(f"wrote {out}")
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

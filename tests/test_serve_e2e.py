"""`attnseg serve` in a real browser: Playwright for Python driving Debian's headless Chromium
(`make test` installs the `chromium` package when it is missing). The test starts the server on a free port,
uploads a CamVid example, checks the overlay and the legend against the label map, hovers, downloads the
label PNG and compares it with `attnseg predict`, types LSeg labels as chips, changes ISR on EDAFormer, sees
an API error on the page, and screenshots the result (into the test's own folder: the README's screenshot is
made by scripts/screenshot_serve.py, never by a test)."""
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EDA = ROOT / "results" / "edaformer-t_camvid.safetensors"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `make test` (it installs Debian's chromium) or "
                    "apt-get install -y chromium")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "serve", "--port", str(port), "--model",
                             "sanet-effnet-lite0-camvid", "--model", "lseg-effnet-lite0-camvid", "--model", str(EDA)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("server exited: " + proc.stderr.read().decode()[-2000:])
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def legend_names(page) -> list[str]:
    return page.eval_on_selector_all("#legend tbody tr", "rows => rows.map(r => r.dataset.name)")


def test_the_page_in_chromium(server, tmp_path):
    import json

    models = {m["name"]: m for m in json.load(urllib.request.urlopen(server + "/api/models"))}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        page.goto(server + "/")
        page.wait_for_selector("#model option", state="attached")
        assert page.input_value("#model") == "sanet-effnet-lite0-camvid"

        # upload -> overlay and legend
        page.set_input_files("#file", str(EXAMPLE))
        page.wait_for_selector("#legend tbody tr", timeout=60_000)
        page.wait_for_function("document.getElementById('mask').width > 0")
        shipped = legend_names(page)

        # the downloaded label PNG is what `attnseg predict` writes, and the legend names its classes
        with page.expect_download() as dl:
            page.click("#download")
        dl.value.save_as(tmp_path / "download.png")
        got = np.asarray(Image.open(tmp_path / "download.png"))
        assert subprocess.run([sys.executable, "-m", "attnseg.cli", "predict", str(EXAMPLE), "--model",
                               "sanet-effnet-lite0-camvid", "--out", str(tmp_path / "cli")],
                              capture_output=True, cwd=ROOT).returncode == 0
        assert np.array_equal(got, np.asarray(Image.open(tmp_path / "cli" / f"{EXAMPLE.stem}.png")))
        names = models["sanet-effnet-lite0-camvid"]["class_names"]
        assert set(shipped) == {names[i] for i in np.unique(got)}

        # hovering the image names the class under the cursor
        box = page.locator("#mask").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.9)
        page.wait_for_selector("#hover:not([hidden])")
        assert page.text_content("#hover") in shipped
        page.fill("#opacity", "70")
        page.dispatch_event("#opacity", "input")
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)  # scripts/screenshot_serve.py makes the README's

        # LSeg: remove the default labels, type new ones as chips; the legend follows
        page.select_option("#model", "lseg-effnet-lite0-camvid")
        page.wait_for_selector("#chips .chip")
        while page.locator("#chips .chip button.remove").count():
            page.locator("#chips .chip button.remove").first.click()
        page.wait_for_selector("#error:not([hidden])")  # no labels: the API's 422 appears on the page
        assert "labels" in page.text_content("#error")
        for label in ("sky", "road", "car", "other"):
            page.fill("#label-input", label)
            page.press("#label-input", "Enter")
        page.wait_for_function("document.querySelectorAll('#chips .chip').length === 4")
        page.wait_for_function("""() => { const rows = [...document.querySelectorAll('#legend tbody tr')];
            return rows.length > 0 && rows.every(r => ['sky', 'road', 'car', 'other'].includes(r.dataset.name)); }""",
                               timeout=60_000)
        assert set(legend_names(page)) <= {"sky", "road", "car", "other"} and set(legend_names(page)) != set(shipped)
        assert page.is_hidden("#error")
        chips = page.eval_on_selector_all("#chips .chip", "c => c.map(x => x.dataset.label)")
        page.locator("#chips .chip").nth(1).locator("button").first.click()  # move "road" left
        page.wait_for_function("document.querySelector('#chips .chip').dataset.label === 'road'")
        assert chips == ["sky", "road", "car", "other"]

        # EDAFormer: an ISR setting changes the run (the status line reports it and the latency)
        page.select_option("#model", EDA.stem)
        page.wait_for_selector("#isr-box:not([hidden])")
        page.wait_for_function("document.getElementById('status').textContent.includes('model')", timeout=60_000)
        page.select_option("#isr", "4,4,2,1:4,2,2")
        page.wait_for_function("document.getElementById('status').textContent.includes('ISR 4,4,2,1:4,2,2')",
                               timeout=60_000)
        assert float(page.get_attribute("#status", "data-latency")) > 0
        browser.close()
    shot = Image.open(tmp_path / "serve.png")
    assert shot.size[0] >= 1000 and np.asarray(shot.convert("L")).std() > 10


def test_api_docs_render_offline(server, tmp_path):
    """/docs and /redoc render with every request outside the server blocked: their scripts come from the package."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        blocked = []

        def only_local(route):
            if route.request.url.startswith(server):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.goto(server + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "attnseg" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path[data-path='/api/segment']", timeout=30_000)
        page.screenshot(path=str(tmp_path / "docs.png"))
        page.goto(server + "/redoc")
        page.wait_for_selector("h1", timeout=30_000)
        assert "attnseg" in page.inner_text("h1")
        page.wait_for_selector("text=segment one image", timeout=30_000)
        page.screenshot(path=str(tmp_path / "redoc.png"))
        browser.close()
    assert blocked == [], blocked
    for shot in ("docs.png", "redoc.png"):
        a = np.asarray(Image.open(tmp_path / shot).convert("L"))
        assert a.std() > 10, f"{shot} is blank"

"""The documentation: README is a front page whose quickstart runs as written, pages rendered from data and code
are current, the site builds with `mkdocs build --strict`, and the model cards say what the records say."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import attnseg
from attnseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = sorted((ROOT / "examples").glob("camvid_test_*.png"))


def block(text: str, heading: str, lang: str) -> str:
    """The first ```lang block after `heading`."""
    rest = text[text.index(heading):]
    return re.search(rf"```{lang}\n(.*?)```", rest, re.S).group(1)


def test_readme_is_a_front_page():
    lines = README.splitlines()
    assert len(lines) <= 200, len(lines)
    assert lines[0] == "# attnseg" and "make demo" in README and "make test" in README
    assert README.index("make demo") < README.index("## Install") < README.index("## Quickstart")


def test_rendered_pages_are_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_docs.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        rel = page.relative_to(ROOT / "docs").as_posix()
        assert rel in nav, f"{rel} is not in mkdocs.yml's nav"


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    import os

    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "load_model" in api and "Segmenter" in api  # mkdocstrings rendered the docstrings
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "--max-work-pixels" in cli
    assert (tmp_path / "site" / "results" / "zoo" / "camvid_zoo.png").is_file()
    for page in (tmp_path / "site").rglob("*.html"):  # offline: nothing is fetched from another host
        html = page.read_text()
        outside = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        assert not outside, (page.name, outside[:3])
    _look_at(tmp_path / "site", tmp_path)


def _look_at(site: Path, out: Path) -> None:
    """The built home page and a method page in Chromium, every request outside the site blocked: the
    navigation and the text are there and the page is not blank."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium (make test installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
        for rel, needle in (("index.html", "The two commands"), ("methods/segformer/index.html", "All-MLP decoder")):
            page.goto((site / rel).as_uri())
            page.wait_for_selector("nav.md-nav")
            assert needle in page.inner_text("article")
            page.screenshot(path=str(out / rel.replace("/", "_").replace(".html", ".png")))
        browser.close()
    shot = np.asarray(Image.open(out / "index.png").convert("L"))
    assert shot.std() > 20  # text and navigation, not an empty page


@pytest.mark.slow
@pytest.mark.skipif(not attnseg.list_pretrained(), reason="no shipped model")
def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    """Each quickstart command, with the README's file names made real (a CamVid example as the photo, the
    examples folder, a clip of examples); `serve` is parsed, not started (the server has its own tests)."""
    pytest.importorskip("openvino")
    monkeypatch.chdir(tmp_path)
    Image.open(EXAMPLES[0]).save("street.jpg", quality=95)
    (tmp_path / "photos").mkdir()
    for f in EXAMPLES:
        Image.open(f).save(tmp_path / "photos" / f.name)
    clip = _clip(tmp_path / "clip.mp4")
    for line in block(README, "## Quickstart", "bash").splitlines():
        argv = shlex.split(line.split("#")[0])
        if not argv:
            continue
        assert argv[0] == "attnseg", line
        if argv[1] == "serve":
            from attnseg.cli import build_parser

            build_parser(["serve"]).parse_args(argv[1:])
            continue
        if "clip.mp4" in argv and clip is None:
            continue
        assert main(argv[1:]) == 0, line
    out = capsys.readouterr().out
    assert (tmp_path / "outputs" / "street.png").is_file() and (tmp_path / "outputs" / "street_overlay.jpg").is_file()
    assert len(list((tmp_path / "masks").glob("*.png"))) == len(EXAMPLES)
    assert "Intended use" in out  # models --card
    code = block(README, "## Quickstart", "python")
    namespace: dict = {}
    exec(compile(code, "README quickstart", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["label_map"].shape == np.asarray(Image.open("street.jpg")).shape[:2]


def _clip(path: Path):
    try:
        import av
    except ImportError:
        return None
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 480, 360, "yuv420p"
        for f in EXAMPLES:
            frame = av.VideoFrame.from_ndarray(np.asarray(Image.open(f).convert("RGB")), format="rgb24")
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def test_model_cards_show_the_recorded_numbers(capsys):
    from attnseg.pretrained import cards

    rec = json.loads((ROOT / "src/attnseg/pretrained/precision.json").read_text())
    assert set(cards.names()) == set(attnseg.list_pretrained())
    for name in cards.names():
        assert main(["models", "--card", name]) == 0
        text = capsys.readouterr().out
        for key in ("Training data", "Intended use", "Known limits", "Licence", "Classes"):
            assert key in text, (name, key)
        for value in rec[name].values():
            assert f"{value:.2f}" in text, (name, value)
        page = (ROOT / "docs" / "cards" / f"{name}.md").read_text()
        assert page == cards.markdown(name)
    assert main(["models", "--card", "segformer-b0"]) == 2


# tables written by hand: reference tables (what an extra adds, the endpoints, the methods, the benchmark index)
# and the architecture table, whose numbers `attnseg flops` computes from the code (its command is on the page)
HAND_TABLES = {"| extra | what it adds |", "| what | command | data |", "| method | paper | in attnseg |",
               "| endpoint | what it does |", "| model | params | GFLOPs | paper | notes |", "| transformers | attnseg |"}


def test_every_results_table_is_rendered_from_data():
    """A table of measurements sits between `<!-- table:NAME -->` markers (scripts/render_docs.py fills it from
    results/); model cards are generated whole. Anything else must be a reference table named above."""
    hand = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if page.parent.name == "cards":
            continue
        lines, inside = page.read_text().splitlines(), False
        for i, line in enumerate(lines):
            inside = (inside or line.startswith("<!-- table:")) and not line.startswith("<!-- /table")
            if line.startswith("| ---") and not inside and lines[i - 1].strip() not in HAND_TABLES:
                hand.append(f"{page.relative_to(ROOT)}:{i}: {lines[i - 1][:60]}")
    assert hand == [], "tables not rendered from data: " + "; ".join(hand)

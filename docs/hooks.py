"""MkDocs hooks: the site shows files that live outside docs/ without copying them into it: the figures in
results/ (under the same path, e.g. `results/zoo/camvid_zoo.png`), CHANGELOG.md (as changelog.md) and
ARCHITECTURE.md (included in development.md)."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for png in sorted((ROOT / "results").rglob("*.png")):
        files.append(File(str(png.relative_to(ROOT)), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    files.append(File.generated(config, "changelog.md", content=(ROOT / "CHANGELOG.md").read_text()))
    return files


def on_page_markdown(markdown, page, config, files):
    if "{{ ARCHITECTURE }}" in markdown:
        text = (ROOT / "ARCHITECTURE.md").read_text().split("\n", 1)[1]  # without its title
        markdown = markdown.replace("{{ ARCHITECTURE }}", text.replace("\n## ", "\n### "))
    return markdown

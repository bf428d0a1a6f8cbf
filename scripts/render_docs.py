"""Render the parts of the docs that come from data or code, so they cannot drift from it:

* tables between `<!-- table:NAME -->` and `<!-- /table -->` markers in README.md and docs/*.md, from the
  JSON in src/attnseg/pretrained/ and results/ (a number changes only when its data changes);
* docs/cli.md, every verb's `--help` from the argparse parser;
* docs/cards/*.md, the model cards (attnseg.pretrained.cards).

    python scripts/render_docs.py           # write
    python scripts/render_docs.py --check   # exit 1 naming every file that differs (the test suite runs this)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DOCS = ROOT / "docs"
RESULTS = ROOT / "results"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def table_shipped() -> str:
    """README's brief model table: task, CamVid test mIoU (fp32 and what auto runs), speed, size."""
    from attnseg.deploy.tune import record_allows
    from attnseg.pretrained import cards

    rows = ["| model | task | CamVid test mIoU (fp32 / as `auto` runs it) | images/s (2 CPU threads, `auto`, CPU "
            "class) | size |", "| --- | --- | --- | --- | --- |"]
    for name in cards.names():
        c = cards.card(name)
        cls, s = next(iter(c["speed"].items()), ("-", {}))
        m, ips = c["miou"], s.get("images_per_s", {})
        # what --backend auto would choose on the CPU the speeds were measured on: the fastest the record allows
        auto = max((k for k in ips if record_allows(m, k) is None), key=ips.get, default="eager-fp32")
        speed = f"{ips[auto]:.1f} at {s['size']} ({cls})" if auto in ips else "-"
        rows.append(f"| [{name}](docs/cards/{name}.md) | {c['task']} | {m['eager-fp32']:.2f} / "
                    f"{m[auto]:.2f} ({auto.replace('-', ' ')}) | {speed} | {c['size_mb']} MB |")
    return "\n".join(rows)


def table_precision() -> str:
    """CamVid test mIoU per backend and precision for every shipped model (pretrained/precision.json)."""
    from attnseg.pretrained.cards import COLUMNS

    rec = _json(ROOT / "src/attnseg/pretrained/precision.json")
    cols = [k for k in COLUMNS if any(k in r for r in rec.values())]
    rows = ["| model | " + " | ".join(COLUMNS[k] for k in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for name, r in sorted(rec.items()):
        rows.append(f"| {name} | " + " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in cols) + " |")
    return "\n".join(rows)


def table_speed() -> str:
    """images/s per backend and precision of the shipped models, one run per working size."""
    from attnseg.pretrained.cards import COLUMNS

    speed = _json(ROOT / "src/attnseg/pretrained/speed.json")
    runs = [(name, cls, s) for name, by_class in sorted(speed.items()) for cls, s in by_class.items()]
    cols = [k for k in COLUMNS if any(k in s["images_per_s"] for _, _, s in runs)]
    rows = ["| model | CPU class | size | " + " | ".join(COLUMNS[k] for k in cols) + " |",
            "| --- | --- | --- |" + " --- |" * len(cols)]
    for name, cls, s in runs:
        ips = s["images_per_s"]
        rows.append(f"| {name} | {cls} | {s['size']} | "
                    + " | ".join(f"{ips[k]:.1f}" if k in ips else "-" for k in cols) + " |")
    where = sorted({f"{cls}: {s['machine']}, {s['threads']} threads" for _, cls, s in runs})
    return "\n".join(rows) + f"\n\nMeasured on: {'; '.join(where)} (OpenVINO bf16 ran 1.45-2.0x its fp32 there: a CPU with bf16 kernels)."


def table_zoo() -> str:
    """The CamVid zoo table benchmarks/camvid_zoo.py writes from its JSON (results/zoo/camvid_zoo.md)."""
    return (RESULTS / "zoo" / "camvid_zoo.md").read_text().strip()


def table_serve_load(name: str) -> str:
    """benchmarks/serve_load.py's rows: throughput, latency, statuses, memory (and label editing, when run)."""
    run = _json(RESULTS / "serve" / f"{name}.json")
    editing = "lseg_editors" in run["rows"][0]
    head = "| label-editing clients | " if editing else "| micro-batching | "
    rows = [head + "images/s | p50 ms | p90 ms | p99 ms | responses | client timeouts | RSS after warm-up | RSS peak |"
            + (" edits sent / abandoned by the client / dropped unrun by the server |" if editing else ""),
            "| --- " * (9 + editing) + "|"]
    for r in run["rows"]:
        first = (str(r["lseg_editors"]) if editing else
                 f"on (`--max-wait-ms {r['max_wait_ms']:g}`)" if r["max_wait_ms"] else "off (default)")
        status = ", ".join(f"{v} x {k}" for k, v in r["status"].items())
        cells = [first, f"{r['images_per_s']:.2f}", f"{r['p50_ms']:.0f}", f"{r['p90_ms']:.0f}", f"{r['p99_ms']:.0f}",
                 status, str(r["client_timeouts"]), f"{r['rss_warm_mb']:.0f} MB", f"{r['rss_peak_mb']:.0f} MB"]
        if editing:
            e = r["edits"]
            cells.append(f"{e['sent']} / {e['abandoned_by_client']} / {r['dropped_by_server']:.0f}" if r["lseg_editors"]
                         else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def table_serve_load_varied() -> str:
    """benchmarks/serve_load.py --new-sizes --new-labels: the server's RSS while every request brings a new size
    and every label edit a new label, with the machine it ran on."""
    run = _json(RESULTS / "serve" / "serve_load_varied.json")
    r, m = run["rows"][0], run["machine"]
    rows = ["| images/s | p50 ms | p99 ms | responses | RSS after warm-up | RSS at 1/4, 1/2, 3/4 of the run | RSS at the "
            "end | RSS peak | sizes / new labels sent |", "| --- " * 9 + "|"]
    status = ", ".join(f"{v} x {k}" for k, v in r["status"].items())
    rows.append(f"| {r['images_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {status} | {r['rss_warm_mb']:.0f} MB "
                f"| {', '.join(f'{v:.0f}' for v in r['rss_quarters_mb'])} MB | {r['rss_end_mb']:.0f} MB | "
                f"{r['rss_peak_mb']:.0f} MB | {r['sizes_sent']} / {r['labels_sent']} |")
    flags = ", ".join(m["flags"]) or "none of AVX2/AVX-512/AMX"
    return "\n".join(rows) + (f"\n\nMeasured on {m['cpu']} ({m['cores']} cores; {flags}), torch {m.get('torch', '-')}, "
                              f"OpenVINO {m.get('openvino', '-')}, Python {m['python']}.")


def table_size_memory() -> str:
    """benchmarks/size_memory.py: RSS over a stream of new image sizes, per backend, bounds off and on."""
    run = _json(RESULTS / "serve" / "size_memory.json")
    step = max(10, len(run["rows"][0]["after"]) // 5 * 10)  # at most about five columns of samples
    counts = [n for n, _ in run["rows"][0]["after"] if n % step == 0]
    rows = ["| backend | bounds | RSS after warm-up | " + " | ".join(f"after {n} sizes" for n in counts)
            + " | most above warm-up (any sample) | seconds | heap given back |", "| --- " * (6 + len(counts)) + "|"]
    for r in run["rows"]:
        top = max(v for _, v in r["after"]) - r["warm"]
        rows.append(f"| {r['backend']} | {r['bounds']} | {r['warm']:.0f} MB | "
                    + " | ".join(f"{v:.0f} MB" for n, v in r["after"] if n in counts)
                    + f" | +{top:.0f} MB | {r['seconds']:.1f} | {r['trims']} times |")
    m = run["machine"]
    return "\n".join(rows) + (f"\n\nModel `{run['args']['model']}`, 2 threads, {run['args']['sizes']} sizes; "
                              f"measured on {m['cpu']} ({m['cores']} cores; {', '.join(m['flags'])}), torch "
                              f"{m.get('torch', '-')}, onnxruntime {m.get('onnxruntime', '-')}, OpenVINO "
                              f"{m.get('openvino', '-')}.")


def table_ray_predict() -> str:
    """benchmarks/ray_predict.py: one process against Ray with 1 and 2 workers, Ray's start-up apart."""
    run = _json(RESULTS / "speed" / "ray_predict.json")
    rows = ["| engine | workers x threads | images | wall s (model loading included) | images/s end to end | "
            "steady images/s |", "| --- | --- | --- | --- | --- | --- |"]
    for key, r in run["runs"].items():
        engine, shape = ("local", f"1 process x {run['cpus']}") if key == "local" else \
            ("ray", key[4:].replace("w_x", " x ").rstrip("t"))
        rows.append(f"| {engine} | {shape} | {r['images']} | {r['wall_s']:.1f} | {r['images_per_s']:.2f} | "
                    f"{r['steady_images_per_s']:.2f} |")
    e = run["estimate_1M"]
    hours = ", ".join(f"{n} worker(s) {h:g} h" for n, h in e["hours_for_1M"].items())
    return "\n".join(rows) + (f"\n\nRay start-up (a local instance): {run['ray_startup_s']:.1f} s. Model "
                              f"`{run['model']}`, `--backend {run['backend']}`, {run['cpus']} CPU cores. 1 million "
                              f"images at {e['per_worker_images_per_s']:g} images/s per worker: {hours} "
                              f"(1,000,000 / (workers x rate) / 3600; {e['assumptions']}).")


def table_video_fps() -> str:
    """benchmarks/video_fps.py: frames/s of `attnseg predict clip.mp4` on `--backend auto` against the model's
    images/s alone on the same backend and precision, with the CamVid test mIoU recorded for them."""
    import statistics

    run = _json(RESULTS / "speed" / "video_fps.json")
    m = run["machine"]
    rows = ["| model | model threads | auto chose | CamVid test mIoU | video frames/s, each round | images/s alone "
            "(working size) | video / alone (medians) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in run["rows"]:
        miou = _json(RESULTS / "precision" / f"{r['model']}_{r['precision']}.json")["mIoU"]
        ratio = statistics.median(r["fps"]) / statistics.median(r["images_per_s"])
        rows.append(f"| `{r['model']}` | {r.get('threads', m['cores'])} | {r['auto']} | {100 * miou:.2f}% | " + ", ".join(f"{v:.1f}" for v in r["fps"])
                    + f" | {', '.join(f'{v:.1f}' for v in r['images_per_s'])} at {r['size'][0]}x{r['size'][1]} | "
                    f"{100 * ratio:.1f}% |")
    m = run["machine"]
    return "\n".join(rows) + (f"\n\nMeasured on {m['cpu']} ({m['cores']} cores; {', '.join(m['flags'])}), "
                              f"{run['rounds']} rounds.")


def table_slide_memory() -> str:
    """benchmarks/slide_memory.py: sliding-window latency and peak RSS at three image sizes."""
    run = _json(RESULTS / "speed" / "slide_memory.json")
    rows = ["| image | latency | peak RSS | logits buffer |", "| --- | --- | --- | --- |"]
    rows += [f"| {r['size']} | {r['latency_s']:.1f} s | {r['peak_rss_mb']} MB | {r['logits_buffer_mb']} MB |"
             for r in run["rows"]]
    return "\n".join(rows)


def table_backends() -> str:
    """`attnseg benchmark` per model and backend: the median latency of the passes in results/zoo/benchmark_rows.log."""
    import statistics

    times: dict = {}
    for line in (RESULTS / "zoo" / "benchmark_rows.log").read_text().splitlines():
        parts = line.split()
        if len(parts) == 9 and not line.startswith("=="):
            times.setdefault(parts[0], {}).setdefault(parts[4], []).append(float(parts[5]))
    rows = ["| model | eager | torch.compile | onnxruntime |", "| --- | --- | --- | --- |"]
    rows += [f"| {m} | " + " | ".join(f"{statistics.median(b[k]):.1f} ms" for k in ("eager", "compile", "onnx")) + " |"
             for m, b in times.items()]
    return "\n".join(rows)


def table_auto_backend() -> str:
    """benchmarks/auto_backend.py per CPU class: each candidate's interleaved images/s, auto's choices from an empty
    cache (and their share of the fastest), and the first `attnseg predict` against the second."""
    out = []
    for f in sorted((RESULTS / "runtime").glob("auto_backend_*.json")):
        run = _json(f)
        m = run["machine"]
        rows = ["| model | size | fastest (img/s) | other candidates (img/s) | auto from an empty cache: choice, "
                "share of the fastest |", "| --- | --- | --- | --- | --- |"]
        for name, r in run["models"].items():
            ips, best = r["images_per_s"], r["fastest"]
            untimed = set(r.get("untimed_by_auto", []))
            others = ", ".join(f"{k}{'*' if k in untimed else ''} {v:.1f}"
                               for k, v in sorted(ips.items(), key=lambda kv: -kv[1]) if k != best)
            autos = "; ".join(f"{a['choice']} {a['of_fastest']:.2f}" for a in r["auto"])
            rows.append(f"| {name} | {r['size'][0]}x{r['size'][1]} | {best} {ips[best]:.1f} | {others} | {autos} |")
        fr, ss = run["first_run"], run.get("serve_start")
        serve = (f" `attnseg serve` (its default models) answered /readyz after {ss['eager_s']:.1f} s with "
                 f"`--backend eager`, {ss['auto_first_s']:.1f} s with `auto` from an empty cache "
                 f"({ss['auto_first_over_eager']:.2f}x eager) and {ss['auto_second_s']:.1f} s with the cache that "
                 "left.") if ss else ""
        out.append("\n".join(rows) + "\n\n\\* not timed by `auto`: another eligible candidate is known to beat it "
                   "(`attnseg tune` says which and why)." + f"\n\nFirst `attnseg predict` of a photo with an empty cache {fr['first_s']:.2f} s, "
                   f"the second {fr['second_s']:.2f} s ({fr['ratio']:.2f}x).{serve} Measured on {m['cpu']} ({m['cores']} "
                   f"cores; {', '.join(m['flags'])}; class {m['cpu_class']}), {m.get('threads')} threads, "
                   f"onnxruntime {m.get('onnxruntime', '-')}, OpenVINO {m.get('openvino', '-')}, torch "
                   f"{m.get('torch', '-')} (`{f.relative_to(ROOT)}`).")
    return "\n\n".join(out) or "(not measured yet)"


TABLES = {"auto_backend": table_auto_backend, "shipped": table_shipped, "slide_memory": table_slide_memory, "backends": table_backends, "video_fps": table_video_fps, "ray_predict": table_ray_predict, "precision": table_precision, "speed": table_speed, "zoo": table_zoo,
          "serve_load": lambda: table_serve_load("serve_load"), "serve_load_lseg": lambda: table_serve_load("serve_load_lseg"),
          "serve_load_varied": table_serve_load_varied, "size_memory": table_size_memory}
MARK = re.compile(r"(<!-- table:([\w:/.\-]+) -->\n)(.*?)(<!-- /table -->)", re.S)


def _cell(spec, folder: Path) -> str:
    """One cell of a `rows:` table: text as written, or a number read from a results file:
    {"json": FILE, "key": "mIoU"} (a dotted path into the JSON), {"csv": FILE, "key": "val_mIoU", "iter": 2000}
    (a train_metrics.csv row), with "scale" (a factor, e.g. 0.01 for a number already in percent), "of" (a
    second spec: the ratio of the two), "minus" (a second spec: the difference), {"mean": [specs]}, "fmt" (default "{:.2f}%", applied to 100 x the value unless "raw") and
    "bold"; a list of these and strings is one cell."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list):  # text and numbers in one cell
        return "".join(_cell(part, folder) for part in spec)
    text = spec.get("fmt", "{:.2f}%").format(_value(spec, folder) if spec.get("raw") else 100 * _value(spec, folder))
    return f"**{text}**" if spec.get("bold") else text


def _value(spec: dict, folder: Path) -> float:
    """The number a cell spec names; with "of": another spec, their ratio (a share); {"mean": [specs]}: the
    mean of several."""
    if "mean" in spec:
        return sum(_value(s, folder) for s in spec["mean"]) / len(spec["mean"])
    path = folder / (spec.get("json") or spec["csv"])
    if "json" in spec:
        value = _json(path)
        for part in spec["key"].split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
    else:
        rows = [ln.split(",") for ln in path.read_text().splitlines()[1:]]
        value = next(float(v) for k, v, it in rows if k == spec["key"] and int(it) == spec["iter"])
    if "scale" in spec:
        value = value * spec["scale"]
    if "minus" in spec:  # of the two numbers as displayed (2 decimals in percent), so the cell adds up
        value = (round(100 * value, 2) - round(100 * _value(spec["minus"], folder), 2)) / 100
    return value / _value(spec["of"], folder) if "of" in spec else value


def table_rows(path: str) -> str:
    """`rows:PATH`: a table whose every number is read from the results files its JSON names (see _cell)."""
    spec = _json(ROOT / path)
    folder = (ROOT / path).parent
    out = ["| " + " | ".join(spec["columns"]) + " |", "|" + " --- |" * len(spec["columns"])]
    out += ["| " + " | ".join(_cell(c, folder) for c in row) + " |" for row in spec["rows"]]
    return "\n".join(out)


def table(name: str) -> str:
    """A named table; `file:PATH`, a Markdown table a tool wrote next to its JSON (e.g. attnseg isr-sweep);
    `rows:PATH`, a table of numbers read from the results files a JSON lists (table_rows)."""
    if name.startswith("file:"):
        return (ROOT / name[5:]).read_text().strip()
    if name.startswith("rows:"):
        return table_rows(name[5:])
    return TABLES[name]()


def with_tables(text: str) -> str:
    return MARK.sub(lambda m: m.group(1) + table(m.group(2)).rstrip() + "\n" + m.group(4), text)


def cli_page() -> str:
    os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal: fixed, so the page is stable
    from attnseg.cli import VERBS, build_parser

    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "cmd")
    out = ["# CLI reference", "", "Generated from the parser by `scripts/render_docs.py`; `attnseg VERB --help` prints "
           "the same.", "", "```text", ap.format_help().rstrip(), "```"]
    for verb in VERBS:
        out += ["", f"## attnseg {verb}", "", "```text", sub.choices[verb].format_help().rstrip(), "```"]
    return "\n".join(out) + "\n"


def card_pages() -> dict[Path, str]:
    from attnseg.pretrained import cards

    pages = {DOCS / "cards" / f"{n}.md": cards.markdown(n) for n in cards.names()}
    index = ["# Model cards", "", "One card per shipped model (`attnseg models --card NAME` prints the same), from "
             "`src/attnseg/pretrained/cards.json` and the measurements in `precision.json` and `speed.json`.", ""]
    index += [f"- [{n}]({n}.md): {cards.card(n)['title']}" for n in cards.names()]
    pages[DOCS / "cards" / "index.md"] = "\n".join(index) + "\n"
    return pages


def rendered() -> dict[Path, str]:
    out = {DOCS / "cli.md": cli_page(), **card_pages()}
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        if path in out:
            continue
        text = path.read_text()
        if MARK.search(text):
            out[path] = with_tables(text)
    return out


def _same(path: Path, text: str) -> bool:
    """The page holds `text`. The CLI page compares with runs of white space as one: argparse aligns columns and
    wraps usage lines differently from one Python to the next (the words are the same: cli.HelpFormatter)."""
    if path.read_text() == text:
        return True
    squash = lambda t: re.sub(r"\s+", " ", t)  # noqa: E731
    return path == DOCS / "cli.md" and squash(path.read_text()) == squash(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    args = ap.parse_args()
    stale = []
    for path, text in rendered().items():
        if not path.is_file() or not _same(path, text):
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print("out of date (run python scripts/render_docs.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    print(("wrote " if stale else "up to date") + ", ".join(map(str, stale)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed / accuracy of every CamVid model attnseg ships or reports, in one run: a README table and a scatter plot.

Per model: parameters, GFLOPs (multiply-accumulates, the papers' count) and images/s of eager PyTorch fp32
and of onnxruntime fp32 at the size the model runs at (CamVid's 360x480; 540x720 for a model trained and run
at 1.5x, whose predictions are resized back to 360x480) (batch 1, `--threads`, timed interleaved: round r runs
every model on both backends one after the other, median per model and round, then the median over rounds,
so drift of this machine's speed hits all rows alike; each model and backend in a process of its own, one
working at a time, see benchmarks/timing.py), and the CamVid test mIoU / aAcc single pass and with
`--flip`, read from the `attnseg eval --out` JSON files named below (a missing one is reported with the
command that writes it, never guessed). Rows whose trained file is not here are timed on the architecture
with seeded random weights (said in the table); the values move the speed a little (denormals), this
machine more: read differences under about a third as noise.

    python benchmarks/camvid_zoo.py --threads 2 --out results/zoo/camvid_zoo
    python benchmarks/camvid_zoo.py --replot   # new accuracy JSONs into the table, the same timings
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attnseg  # noqa: E402
from attnseg.deploy.backends.onnxruntime import OnnxModel  # noqa: E402
from attnseg.deploy.export import export_onnx  # noqa: E402
from attnseg.analysis.flops import count_flops  # noqa: E402
from timing import time_interleaved  # noqa: E402

SIZE = (360, 480)
EVAL = ("attnseg eval --model {src} --dataset camvid --data-root ../shared/data/camvid --split test --backend eager{opts}"
        " --out {out}")


@dataclass
class Row:
    label: str
    source: str  # registered pretrained name or trained file; else `arch` with random weights is timed
    arch: str
    test: str  # attnseg eval --out JSON, single pass
    flip: str  # the same with --flip
    options: dict = field(default_factory=dict)  # --model-option for eval and timing
    arch_options: dict = field(default_factory=dict)  # architecture options (kept in a trained file) for `arch`
    shipped: bool = False
    size: tuple[int, int] = SIZE  # the size it runs at (timing, GFLOPs)
    eval_opts: str = ""  # what its test JSONs were measured with beyond --flip (e.g. " --scales 1.5")


ROWS = [
    Row("allmlp-effnet-lite2-camvid (shipped default, 6000 iterations)", "allmlp-effnet-lite2-camvid", "allmlp-effnet-lite2",
        "results/zoo/allmlp-effnet-lite2-camvid_fp16_test_s15.json",
        "results/zoo/allmlp-effnet-lite2-camvid_fp16_test_s15_flip.json", shipped=True, size=(540, 720),
        eval_opts=" --scales 1.5"),
    Row("sanet-effnet-lite0-camvid (shipped, the real-time model)", "sanet-effnet-lite0-camvid",
        "sanet-effnet-lite0", "results/zoo/sanet-effnet-lite0-camvid_fp16_test.json",
        "results/zoo/sanet-effnet-lite0-camvid_fp16_test_flip.json", shipped=True),
    Row("lseg-effnet-lite2-camvid (shipped, 11 class names, 4000 iterations)", "lseg-effnet-lite2-camvid", "lseg-effnet-lite2",
        "results/zoo/lseg-effnet-lite2-camvid_fp16_test_s15.json", "results/zoo/lseg-effnet-lite2-camvid_fp16_test_s15_flip.json",
        shipped=True, size=(540, 720), eval_opts=" --scales 1.5"),
    Row("lseg-effnet-lite0-camvid (shipped, 11 class names)", "lseg-effnet-lite0-camvid", "lseg-effnet-lite0",
        "results/zoo/lseg-effnet-lite0-camvid_fp16_test.json", "results/zoo/lseg-effnet-lite0-camvid_fp16_test_flip.json",
        shipped=True),
    Row("allmlp-effnet-lite0", "runs/allmlp-effnet-lite0_camvid/final.safetensors", "allmlp-effnet-lite0",
        "results/zoo/allmlp-effnet-lite0_camvid_test.json", "results/zoo/allmlp-effnet-lite0_camvid_test_flip.json"),
    Row("sanet-effnet-lite0, paper-faithful, mask prediction", "runs/sanet-effnet-lite0_camvid_paper/final.safetensors",
        "sanet-effnet-lite0", "results/sanet_ablation/sanet-effnet-lite0_camvid_paper_test_mask.json",
        "results/sanet_ablation/sanet-effnet-lite0_camvid_paper_test_mask_flip.json", {"predict": "mask"}),
    Row("edaformer-t (from scratch)", "results/zoo/edaformer-t_camvid.safetensors", "edaformer-t",
        "results/zoo/edaformer-t_camvid_test_fp32.json", "results/zoo/edaformer-t_camvid_test_flip.json"),
    Row("allmlp-effnet-lite2, 2000 iterations, run at 1.5x (the default before 6000 iterations), fp16",
        "runs/allmlp-effnet-lite2_camvid/final.safetensors", "allmlp-effnet-lite2",
        "results/zoo/allmlp-effnet-lite2_camvid_fp16_test_s15.json", "results/zoo/allmlp-effnet-lite2_camvid_fp16_test_s15_flip.json",
        size=(540, 720), eval_opts=" --scales 1.5"),
    Row("allmlp-effnet-lite2, 2000 iterations, run at 1x",
        "runs/allmlp-effnet-lite2_camvid/final.safetensors", "allmlp-effnet-lite2",
        "results/zoo/allmlp-effnet-lite2_camvid_test.json", "results/zoo/allmlp-effnet-lite2_camvid_test_flip.json"),
    Row("allmlp-effnet-lite2, output stride 16, 2000 iterations", "runs/allmlp-effnet-lite2_os16_camvid/final.safetensors",
        "allmlp-effnet-lite2", "results/zoo/allmlp-effnet-lite2_os16_camvid_test.json",
        "results/zoo/allmlp-effnet-lite2_os16_camvid_test_flip.json", arch_options={"backbone_options": {"output_stride": 16}}),
    Row("allmlp-effnet-lite2, 2000 iterations, trained and run at 1.5x", "runs/allmlp-effnet-lite2_s15_camvid/final.safetensors",
        "allmlp-effnet-lite2", "results/zoo/allmlp-effnet-lite2_s15_camvid_test_s15.json",
        "results/zoo/allmlp-effnet-lite2_s15_camvid_test_s15_flip.json", size=(540, 720), eval_opts=" --scales 1.5"),
    Row("lseg-effnet-lite2, several names per class, 2000 iterations, trained and run at 1.5x",
        "runs/lseg-effnet-lite2_camvid_vocab/final.safetensors", "lseg-effnet-lite2",
        "results/zoo/lseg-effnet-lite2_camvid_vocab_test_s15.json", "results/zoo/lseg-effnet-lite2_camvid_vocab_test_s15_flip.json",
        size=(540, 720), eval_opts=" --scales 1.5"),
]


def build(row: Row) -> tuple[torch.nn.Module, bool]:
    """(model taking images only, trained?)"""
    from attnseg.models.lseg import FixedLabels, LSeg

    trained = row.source in attnseg.list_pretrained() or Path(row.source).is_file()
    if trained:
        model = attnseg.load_model(row.source, **row.options)
    else:
        torch.manual_seed(0)
        model = attnseg.create_model(row.arch, **({} if row.arch.startswith("lseg") else {"num_classes": 11}),
                                     **row.options, **row.arch_options)
    model = model.float().eval()
    return (FixedLabels(model, 11) if isinstance(model, LSeg) else model), trained


def flops(model, row: Row) -> dict:
    """Parameters, GFLOPs at the size the row runs at and at CamVid's 360x480 (counted once when they agree)."""
    f = count_flops(model, row.size)
    at_360 = f if tuple(row.size) == SIZE else count_flops(model, SIZE)
    return {"params_m": f["params_m"], "gmacs": f["gmacs"], "gmacs_360x480": at_360["gmacs"]}


def make_runner(i: int, backend: str, onnx_path: str):
    """The call a timing worker times for ROWS[i] (runs in the worker process)."""
    model, _ = build(ROWS[i])
    if backend == "eager":
        return model
    onnx = OnnxModel(onnx_path, torch.get_num_threads())
    if getattr(model, "model", model) is model:
        return onnx
    return lambda x: onnx(x, text_embeddings=model.text)  # LSeg: the 11 label embeddings as an input


def accuracy(row: Row) -> dict:
    out = {}
    for key, path, flag in (("test", row.test, ""), ("flip", row.flip, " --flip")):
        p = Path(path)
        if p.is_file():
            d = json.loads(p.read_text())
            out[key] = {"mIoU": d["mIoU"], "aAcc": d["aAcc"], "json": path}
        else:
            opts = "".join(f" --model-option {k}={v}" for k, v in row.options.items()) + row.eval_opts + flag
            out[key] = {"missing": EVAL.format(src=row.source, opts=opts, out=path)}
    return out


def table(rows: list[dict]) -> str:
    def pct(a, k):
        return f"{100 * a[k]:.2f}%" if k in a else "not measured"

    lines = ["| model | params | runs at | GFLOPs at 360x480 | GFLOPs as run | img/s eager fp32 | "
             "img/s onnxruntime fp32 | test mIoU | test mIoU `--flip` | aAcc |", "|" + " --- |" * 10]
    for r in rows:
        name = r["label"] + ("" if r["trained"] else " (timed with random weights; no trained file here)")
        lines.append(f"| {name} | {r['params_m']:.2f}M | {r['size'][0]}x{r['size'][1]} | {r['gmacs_360x480']:.2f} | "
                     f"{r['gmacs']:.2f} | "
                     f"{r['img_s']['eager']:.2f} | "
                     f"{r['img_s']['onnx']:.2f} | {pct(r['acc']['test'], 'mIoU')} | {pct(r['acc']['flip'], 'mIoU')} | "
                     f"{pct(r['acc']['test'], 'aAcc')} |")
    return "\n".join(lines)


def scatter(rows: list[dict], path: Path) -> None:
    """mIoU against images/s, eager (dot) and onnxruntime (square) joined per model. Points are numbered and
    the numbers keyed beside the plot (the models crowd around 63% on top of each other); a model far below
    the rest (EDAFormer-T from scratch) goes to a lower panel under a broken axis instead of squashing the
    others into a few pixels."""
    from attnseg.io import atomic_write
    from attnseg.plots import pyplot

    plt = pyplot()
    pts = [(n, r, 100 * r["acc"]["test"]["mIoU"]) for n, r in enumerate(rows, 1) if "mIoU" in r["acc"]["test"]]
    ys = sorted(y for _, _, y in pts)
    gap = next(((lo, hi) for lo, hi in zip(ys, ys[1:]) if hi - lo > 15), None)  # 15 points apart: two panels
    panels = ([(gap[1] - 1, ys[-1] + 1), (ys[0] - 1, gap[0] + 1)] if gap else [(ys[0] - 1, ys[-1] + 1)])
    cut = gap is not None
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, figsize=(10.5, 5.2),
                             gridspec_kw={"height_ratios": [5, 1][:len(panels)], "hspace": 0.08})
    axes = axes[:, 0]
    for ax, (lo, hi) in zip(axes, panels):
        for n, r, y in pts:
            if not lo <= y <= hi:
                continue
            ax.plot([r["img_s"]["eager"], r["img_s"]["onnx"]], [y, y], color="0.75", lw=1, zorder=1)
            ax.scatter(r["img_s"]["eager"], y, marker="o", color="C0", zorder=2)
            ax.scatter(r["img_s"]["onnx"], y, marker="s", facecolors="none", edgecolors="C1", zorder=2)
            ax.annotate(str(n), (r["img_s"]["onnx"], y), textcoords="offset points", xytext=(5, 2), fontsize=8,
                        fontweight="bold")
        ax.set_ylim(lo, hi)
        ax.grid(alpha=0.3)
    if cut:  # the broken axis: no spine between the panels, a tick-label gap says the rest is cut
        axes[0].spines["bottom"].set_visible(False)
        axes[1].spines["top"].set_visible(False)
        axes[0].tick_params(bottom=False)
    axes[0].scatter([], [], marker="o", color="C0", label="eager PyTorch fp32")
    axes[0].scatter([], [], marker="s", facecolors="none", edgecolors="C1", label="onnxruntime fp32")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].set_title("CamVid: accuracy vs speed")
    axes[-1].set_xlabel("images/s at the size each model runs at (batch 1, this machine's CPU)")
    fig.supylabel("CamVid test mIoU (%), single pass", fontsize=10)
    axes[-1].set_xlim(left=0)
    key = "\n".join(f"{n}  {r['label'].replace(' (timed with random weights', '')}"
                     f"{'' if r['trained'] else ' *'}" for n, r, _ in pts)
    if not all(r["trained"] for _, r, _ in pts):
        key += "\n\n* timed with seeded random weights (no trained file here; speeds are coarse, see README)"
    fig.text(0.62, 0.5, key, fontsize=7, va="center", ha="left", wrap=True)
    fig.subplots_adjust(left=0.08, right=0.6, top=0.93, bottom=0.1)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    md = table(rows)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(md + "\n")
    scatter(rows, out.with_suffix(".png"))
    print(md)
    print(f"wrote {out}.json, .md and .png")


def replot(out: Path) -> None:
    """The timed rows of OUT.json with today's accuracy files and GFLOPs; rows not timed there are left out."""
    old = json.loads(out.with_suffix(".json").read_text())
    by_label = {row.label: row for row in ROWS}
    rows = []
    for r in old["rows"]:
        row = by_label.get(r["label"])
        if row is None:
            print(f"skipped {r['label']!r}: no such row in ROWS any more")
            continue
        model, trained = build(row)
        r.update(trained=trained, acc=accuracy(row), **flops(model, row))
        rows.append(r)
    write(out, {k: v for k, v in old.items() if k != "rows"}, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated labels' first words (default: every row)")
    ap.add_argument("--out", default="results/zoo/camvid_zoo", help="writes OUT.json, OUT.md and OUT.png")
    ap.add_argument("--replot", action="store_true", help="keep OUT.json's timings; re-read the accuracy JSONs and "
                    "recount GFLOPs (both exact), rewrite OUT.json/.md/.png: no timing, any load on the machine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.replot:
        return replot(Path(args.out))
    chosen = [i for i, r in enumerate(ROWS) if not args.only or r.label.split()[0].rstrip(",") in args.only.split(",")]
    rows, makers, shapes = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="attnseg_zoo_") as tmp:
        for i in chosen:
            row = ROWS[i]
            model, trained = build(row)
            inner = getattr(model, "model", model)  # LSeg: its graph takes the 11 label embeddings as an input
            path = str(export_onnx(inner, Path(tmp) / f"{i}.onnx", dynamic=True))
            makers[f"{i} eager"] = (make_runner, (i, "eager", path))
            makers[f"{i} onnx"] = (make_runner, (i, "onnx", path))
            shapes[f"{i} eager"] = shapes[f"{i} onnx"] = (1, 3, *row.size)
            rows.append({"label": row.label, "source": row.source, "trained": trained, "shipped": row.shipped,
                         "options": row.options, "size": list(row.size), **flops(model, row),
                         "acc": accuracy(row)})
            del model, inner
        per_round = time_interleaved(makers, shapes, args.threads, args.rounds, args.iters)
    times = [{k: per_round[f"{i} {k}"] for k in ("eager", "onnx")} for i in chosen]
    for r, t in zip(rows, times):
        r["ms"] = {k: statistics.median(v) for k, v in t.items()}
        r["img_s"] = {k: 1000 / v for k, v in r["ms"].items()}
        print(f"{r['label']:<56} {r['params_m']:6.2f}M {r['gmacs']:6.2f} GFLOPs  eager {r['img_s']['eager']:6.2f}"
              f"  onnx {r['img_s']['onnx']:6.2f} img/s  mIoU " + "  ".join(
                  f"{k} {100 * a['mIoU']:.2f}" if "mIoU" in a else f"{k} missing" for k, a in r["acc"].items()),
              flush=True)
        for a in r["acc"].values():
            if "missing" in a:
                print(f"    not measured yet: {a['missing']}")
    write(Path(args.out), {"threads": args.threads, "rounds": args.rounds, "iters": args.iters}, rows)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The graphs shipped beside the trained weights (src/attnseg/pretrained/graphs/): per model, the fp32 ONNX graph
# (dynamic shapes; onnxruntime and OpenVINO read it, so the first run exports nothing) for the models served by
# default (LSeg's for onnxruntime only, and an fp32 OpenVINO IR beside it: the CPU plugin cannot compile the label
# product as onnxruntime's graph holds it, and converting the model takes ~35 s), and the int8 graphs whose recorded CamVid test mIoU (pretrained/precision.json) is within 0.3 points of
# fp32 (`--backend auto` may choose only those): onnxruntime QDQ (NAME.int8.onnx) and NNCF (NAME.int8.xml/.bin),
# calibrated exactly as scripts/precision_accuracy.sh made the graphs it measured (64 CamVid train images).
# Each graph is then checked against the eager model on the example images at the model's working size: one whose
# label maps agree on fewer than 98% of the pixels is not shipped (its kind is listed under "rejected" with the
# agreement). Then manifest.json: the SHA-256 of each model's weights and of every graph file (attnseg.deploy.graphs).
#   scripts/build_graphs.sh        ATTNSEG=path/to/attnseg  CAMVID=path/to/camvid
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ATTNSEG:-.venv/bin/attnseg}
CAMVID=${CAMVID:-${ATTNSEG_DATA:-../shared/data}/camvid}
OUT=src/attnseg/pretrained/graphs
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
# what to build, from the record: "NAME KIND" lines
plan=$("$PY" - <<'PY'
import json
rec = json.load(open("src/attnseg/pretrained/precision.json"))
served = ("allmlp-effnet-lite2-camvid", "sanet-effnet-lite0-camvid", "lseg-effnet-lite2-camvid")
for name, r in sorted(rec.items()):
    fp32 = r["eager-fp32"]
    if name in served:
        print(name, "fp32.onnx")
        if name.startswith("lseg-"):
            print(name, "fp32.xml")
    if fp32 - r.get("onnx-int8", -1e9) <= 0.3:
        print(name, "int8.onnx")
    if min(fp32 - r.get("openvino-int8", -1e9), fp32 - r.get("openvino-int8-bf16", -1e9)) <= 0.3:
        print(name, "int8.xml")
PY
)
echo "$plan" | while read -r name kind; do
  f="$OUT/$name.$kind"
  [ -f "$f" ] && { echo "have $f"; continue; }
  grep -q "\"$kind\"" <(python3 -c "import json,sys; print(json.dumps(json.load(open('$OUT/manifest.json')).get('$name',{}).get('rejected',{})))" 2>/dev/null) \
    && { echo "rejected before: $f (delete its entry under \"rejected\" in manifest.json to build it again)"; continue; }
  start=$(date +%s)
  case $kind in
    fp32.onnx) "$A" export --model "$name" --dynamic --out "$f" ;;
    fp32.xml)  "$A" export --model "$name" --format openvino --out "$f" ;;
    int8.onnx) "$A" export --model "$name" --out "$f" --quantize int8 --calibrate "camvid:$CAMVID:train" --calib-images 64 ;;
    int8.xml)  "$A" export --model "$name" --format openvino --quantize int8 --calibrate "camvid:$CAMVID:train" \
                 --calib-images 64 --out "$f" ;;
  esac
  echo "built $f in $(( $(date +%s) - start )) s"
done
"$PY" - <<'PY'
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, "src")
import attnseg
from attnseg.deploy.backends.onnxruntime import OnnxModel
from attnseg.deploy.backends.openvino import OpenVinoModel

out = Path("src/attnseg/pretrained/graphs")
sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
pre = Path("src/attnseg/pretrained")
examples = sorted(Path("examples").glob("camvid_test_*.png"))
weights = {p.name.removesuffix(".safetensors"): p for p in pre.glob("*.safetensors")}
old = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
manifest, eager = {}, {}
for f in sorted(out.iterdir()):
    if f.suffix not in (".onnx", ".xml"):
        continue
    name, kind = f.name.split(".", 1)
    entry = manifest.setdefault(name, {"weights_sha256": sha(weights[name]), "files": {}, "agreement": {},
                                       "rejected": dict(old.get(name, {}).get("rejected", {}))})
    if name not in eager:
        model = attnseg.load_model(name).eval()
        eager[name] = [attnseg.Segmenter(model).predict(str(e)) for e in examples]
    graph = OnnxModel(f) if f.suffix == ".onnx" else OpenVinoModel(f, "fp32")
    maps = [attnseg.Segmenter(graph).predict(str(e)) for e in examples]
    agree = sum(float((a == b).sum()) for a, b in zip(maps, eager[name])) / sum(a.size for a in maps)
    if agree < 0.98:
        entry["rejected"][kind] = f"label maps agree with eager PyTorch on {100 * agree:.2f}% of the example pixels"
        print(f"not shipped: {f} ({entry['rejected'][kind]})")
        for part in (f, f.with_suffix(".bin")):
            part.unlink(missing_ok=True)
        continue
    files = {f.name: sha(f)}
    if f.suffix == ".xml":
        files[f.with_suffix(".bin").name] = sha(f.with_suffix(".bin"))
    entry["files"][kind] = files
    entry["agreement"][kind] = round(agree, 4)
(out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
print(json.dumps({n: {"shipped": sorted(e["files"]), "rejected": sorted(e["rejected"])} for n, e in manifest.items()}))
PY

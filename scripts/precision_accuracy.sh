#!/usr/bin/env bash
# CamVid test mIoU per precision and backend: fp32 eager, bf16 eager, fp32 onnxruntime, int8 onnxruntime,
# fp32, bf16 and int8 OpenVINO (int8: NNCF, `attnseg export --format openvino --quantize int8`, the rest of the
# graph in fp32, or in bf16 for ov_int8_bf16) for the shipped SANet and LSeg and the CamVid-trained EDAFormer-T in results/zoo/. int8 graphs are
# `attnseg export --quantize int8` with its defaults (the family's measured fp32 ops), calibrated on $CALIB (64)
# CamVid train images. JSONs go to results/precision/. Accuracy only: speed is benchmarks/precision.py.
#   scripts/precision_accuracy.sh [MODEL...]
#   SCALES=1.5 scripts/precision_accuracy.sh allmlp-effnet-lite2-camvid   # a model run at 1.5x: one pass at
#   720x540 (its working size); JSONs named ..._s15.json
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ATTNSEG:-.venv/bin/attnseg}
ROOT=${CAMVID:-../shared/data/camvid}
OUT=results/precision
TMP=${TMPDIR:-/tmp}/attnseg_precision
mkdir -p "$OUT" "$TMP"
models=("${@:-sanet-effnet-lite0-camvid lseg-effnet-lite0-camvid results/zoo/edaformer-t_camvid.safetensors}")
for m in ${models[@]}; do
  n=$(basename "$m" .safetensors)
  [ "$n" = final ] && n=$(basename "$(dirname "$m")")  # runs/NAME/final.safetensors -> NAME
  sfx=${SCALES:+_s${SCALES//./}}
  ev() { [ -f "$OUT/${n}_$1$sfx.json" ] || "$A" eval --dataset camvid --data-root "$ROOT" --split test --threads 2 \
           ${SCALES:+--scales "$SCALES"} --out "$OUT/${n}_$1$sfx.json" "${@:2}" | tail -1; }
  ev fp32 --model "$m" --backend eager
  ev bf16 --model "$m" --backend eager --dtype bf16
  [ -f "$OUT/${n}_onnx_fp32$sfx.json" ] || [ -f "$TMP/$n.onnx" ] || "$A" export --model "$m" --dynamic --out "$TMP/$n.onnx"
  ev onnx_fp32 --model "$TMP/$n.onnx"
  [ -f "$OUT/${n}_onnx_int8$sfx.json" ] || [ -f "$TMP/$n.int8.onnx" ] || "$A" export --model "$m" --out "$TMP/$n.int8.onnx" --quantize int8 \
    --calibrate "camvid:$ROOT:train" --calib-images "${CALIB:-64}"
  ev onnx_int8 --model "$TMP/$n.int8.onnx"
  ev ov_fp32 --model "$m" --backend openvino
  ev ov_bf16 --model "$m" --backend openvino --dtype bf16
  { [ -f "$OUT/${n}_ov_int8$sfx.json" ] && [ -f "$OUT/${n}_ov_int8_bf16$sfx.json" ]; } || [ -f "$TMP/$n.int8.xml" ] || "$A" export --model "$m" --format openvino \
    --quantize int8 --calibrate "camvid:$ROOT:train" --calib-images "${CALIB:-64}" --out "$TMP/$n.int8.xml"
  ev ov_int8 --model "$TMP/$n.int8.xml" --dtype fp32
  ev ov_int8_bf16 --model "$TMP/$n.int8.xml" --dtype bf16
done

#!/usr/bin/env bash
# Issue 16: argmax agreement of int8 onnxruntime and bf16 eager with fp32 on a *trained* SegFormer-B0
# (configs/segformer-b0_camvid_cpu.yaml, resumable), on the 233 CamVid test images, then its test mIoU
# per precision as scripts/precision_accuracy.sh measures the other models.
#   nohup scripts/segformer_b0_agreement.sh > runs/segformer_b0_agreement.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ATTNSEG:-.venv/bin/attnseg}
PY=${PYTHON:-.venv/bin/python}
ROOT=${CAMVID:-../shared/data/camvid}
D=runs/segformer-b0_camvid_cpu
if [ ! -f $D/final.safetensors ]; then
  resume=(); [ -f $D/latest.pth ] && resume=(--resume)
  "$A" train --config configs/segformer-b0_camvid_cpu.yaml "${resume[@]}"
fi
[ -f results/precision/agreement_b0_camvid.json ] || "$PY" benchmarks/precision.py --models $D/final.safetensors \
  --agreement "camvid:$ROOT:test" --no-timing --json results/precision/agreement_b0_camvid.json
scripts/precision_accuracy.sh $D/final.safetensors

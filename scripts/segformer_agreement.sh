#!/usr/bin/env bash
# Argmax agreement of int8 onnxruntime and bf16 eager with fp32 on *trained* SegFormers (B0 and B2,
# trained from scratch on CamVid by configs/segformer-{b0,b2}_camvid_cpu.yaml, resumable), on the 233 CamVid
# test images, then each one's test mIoU per precision as scripts/precision_accuracy.sh measures the others.
#   nohup scripts/segformer_agreement.sh [b0] [b2] > runs/segformer_agreement.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ATTNSEG:-.venv/bin/attnseg}
PY=${PYTHON:-.venv/bin/python}
ROOT=${CAMVID:-../shared/data/camvid}
variants=("$@"); [ $# -gt 0 ] || variants=(b0 b2)
for v in "${variants[@]}"; do
  D=runs/segformer-${v}_camvid_cpu
  if [ ! -f $D/final.safetensors ]; then
    resume=(); [ -f $D/latest.pth ] && resume=(--resume)
    [ -f $D/latest.pth ] || [ ! -d $D ] || resume=(--overwrite)  # stopped before its first checkpoint: nothing to keep
    "$A" train --config configs/segformer-${v}_camvid_cpu.yaml "${resume[@]}"
  fi
  [ -f results/precision/agreement_${v}_camvid.json ] || "$PY" benchmarks/precision.py --models $D/final.safetensors \
    --agreement "camvid:$ROOT:test" --no-timing --json results/precision/agreement_${v}_camvid.json
  scripts/precision_accuracy.sh $D/final.safetensors
done

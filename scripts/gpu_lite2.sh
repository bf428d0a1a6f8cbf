#!/usr/bin/env bash
# Issue 17 on a lent GPU: train CamVid configs (the same files scripts/lite2_camvid.sh trains on the CPU) on
# CUDA, then pack each finished run (final.safetensors, metrics.csv, config.yaml, train.log) as a tar cut
# into 15 MB pieces for the trip back (the device tool returns files of at most 16 MiB). Validation and test
# evaluation happen afterwards on the CPU machine, on the original PNGs; scripts/lite2_camvid.sh skips the
# training of a run whose final.safetensors is in place and evaluates it.
#
#   CAMVID=ROOT OUT=DIR scripts/gpu_lite2.sh NAME[=CONFIG[,KEY=VALUE...]]...
# NAME is the run (runs/NAME); CONFIG defaults to configs/NAME.yaml; KEY=VALUE are extra --set overrides.
# ROOT needs only train.txt and its files (no validation split is read here). Each run has $LIMIT seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
ROOT=${CAMVID:-../shared/data/camvid}
OUT=${OUT:?OUT must name the folder the packed runs go to}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
for spec in "$@"; do
  name=${spec%%=*}
  rest=${spec#"$name"}; rest=${rest#=}
  cfg=${rest%%,*}; [ -n "$cfg" ] || cfg=configs/$name.yaml
  sets=(); IFS=, read -ra kv <<< "${rest#"$cfg"}"
  for x in "${kv[@]}"; do [ -n "$x" ] && sets+=(--set "$x"); done
  W=runs/$name
  rm -rf "$W"
  echo "== $name: $cfg ${sets[*]}"
  start=$(date +%s)
  timeout "${LIMIT:-300}" "$PY" -m attnseg.cli train --config "$cfg" --set "train.work_dir=$W" \
    --set "train.device=$DEVICE" --set "data.root=$ROOT" --set "data.val_split=''" \
    --set "data.workers=${WORKERS:-12}" --set "train.threads=${THREADS:-4}" "${sets[@]}" > /tmp/train_$name.log 2>&1
  rc=$?
  echo "   exit $rc after $(( $(date +%s) - start )) s"; tail -3 /tmp/train_$name.log
  [ -f "$W/final.safetensors" ] || continue
  cp /tmp/train_$name.log "$W/train.log"
  tar cf "/tmp/$name.tar" -C runs "$name/final.safetensors" "$name/metrics.csv" "$name/config.yaml" "$name/train.log"
  split -b 15M "/tmp/$name.tar" "$OUT/$name.tar."
done

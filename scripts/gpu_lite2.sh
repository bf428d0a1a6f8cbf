#!/usr/bin/env bash
# On a GPU machine: train CamVid configs (the same files scripts/lite2_camvid.sh trains on the CPU) on
# CUDA, then pack the finished runs (final.safetensors, metrics.csv, config.yaml, train.log) into one tar cut
# into 15 MB pieces for the trip back (the device tool returns at most 8 files of 16 MiB, 64 MiB in all).
# Validation and test evaluation happen afterwards on the CPU machine, on the original PNGs;
# scripts/lite2_camvid.sh skips the training of a run whose final.safetensors is in place and evaluates it.
#
#   CAMVID=ROOT OUT=DIR [PARALLEL=1] scripts/gpu_lite2.sh NAME[=CONFIG[,KEY=VALUE...]]...
# NAME is the run (runs/NAME); CONFIG defaults to configs/NAME.yaml; KEY=VALUE are extra --set overrides.
# ROOT needs only train.txt and its files (no validation split is read here). Each run has $LIMIT seconds.
# PARALLEL=1 trains the runs at once (a small model leaves most of the GPU idle, so runs share it well).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
ROOT=${CAMVID:-../shared/data/camvid}
OUT=${OUT:?OUT must name the folder the packed runs go to}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

train_one() {  # spec -> runs/NAME, its log in /tmp/train_NAME.log
  local spec=$1 name rest cfg sets=() kv x start rc
  name=${spec%%=*}
  rest=${spec#"$name"}; rest=${rest#=}
  cfg=${rest%%,*}; [ -n "$cfg" ] || cfg=configs/$name.yaml
  IFS=, read -ra kv <<< "${rest#"$cfg"}"
  for x in "${kv[@]}"; do [ -n "$x" ] && sets+=(--set "$x"); done
  rm -rf "runs/$name"
  echo "== $name: $cfg ${sets[*]}"
  start=$(date +%s)
  timeout "${LIMIT:-300}" "$PY" -m attnseg.cli train --config "$cfg" --set "train.work_dir=runs/$name" \
    --set "train.device=$DEVICE" --set "data.root=$ROOT" --set "data.val_split=''" \
    --set "data.workers=${WORKERS:-12}" --set "train.threads=${THREADS:-4}" "${sets[@]}" > "/tmp/train_$name.log" 2>&1
  rc=$?
  echo "   $name: exit $rc after $(( $(date +%s) - start )) s"; tail -2 "/tmp/train_$name.log"
}

names=()
for spec in "$@"; do
  names+=("${spec%%=*}")
  if [ "${PARALLEL:-0}" = 1 ]; then train_one "$spec" & else train_one "$spec"; fi
done
wait
done_runs=()
for name in "${names[@]}"; do
  W=runs/$name
  [ -f "$W/final.safetensors" ] || { echo "   $name: no final.safetensors"; continue; }
  cp "/tmp/train_$name.log" "$W/train.log"
  done_runs+=("$name/final.safetensors" "$name/metrics.csv" "$name/config.yaml" "$name/train.log")
done
[ ${#done_runs[@]} -gt 0 ] || exit 1
tar cf /tmp/runs.tar -C runs "${done_runs[@]}"
split -b 15M /tmp/runs.tar "$OUT/runs.tar."
ls -l "$OUT"

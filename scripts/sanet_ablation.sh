#!/usr/bin/env bash
# SANet ablation: the paper-faithful recipe of configs/sanet-effnet-lite0_camvid_paper.yaml with
# one of attnseg's earlier choices switched back per run, same budget (2000 iterations, batch 8, 320 crops).
# Each run resumes where it stopped (runs/ keeps latest.pth), so the script can be restarted at any time;
# finished runs are skipped. Then each is evaluated on the CamVid test split for both predictions.
#   nohup scripts/sanet_ablation.sh > runs/sanet_ablation.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ATTNSEG:-.venv/bin/attnseg}
CFG=configs/sanet-effnet-lite0_camvid_paper.yaml
ROOT=${CAMVID:-../shared/data/camvid}
runs=(
  "attention_act=sigmoid"
  "head_width=reduced"
  "category_source=backbone"
  "dense_loss_on=den_sa4"
  "category_gate=true"
  "attention_act=sigmoid,category_source=backbone,category_gate=true,dense_loss_on=den_sa4,head_width=reduced"
)
for opts in "${@:-${runs[@]}}"; do
  name=$(echo "$opts" | tr ',=' '__')
  [ "$opts" = "${runs[5]}" ] && name=all_legacy
  dir=runs/sanet_abl_$name
  sets=()
  IFS=, read -ra kv <<< "$opts"
  for x in "${kv[@]}"; do sets+=(--set "model.options.$x"); done
  if [ ! -f "$dir/final.safetensors" ]; then
    resume=(); [ -f "$dir/latest.pth" ] && resume=(--resume)
    [ -f "$dir/latest.pth" ] || [ ! -d "$dir" ] || resume=(--overwrite)  # stopped before its first checkpoint
    "$A" train --config "$CFG" "${sets[@]}" --set "train.work_dir=$dir" "${resume[@]}"
  fi
  for pred in den_sa4 mask; do
    out=results/sanet_ablation/sanet_abl_${name}_test_${pred}.json
    [ -f "$out" ] || "$A" eval --model "$dir/final.safetensors" --dataset camvid --data-root "$ROOT" --split test \
      --model-option predict=$pred --out "$out"
  done
done

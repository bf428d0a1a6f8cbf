#!/usr/bin/env bash
# The long CPU runs behind the results, one after the other (two cores: never two at once). Each script
# resumes where it stopped and skips what is finished, so this can be restarted at any time:
#   nohup scripts/cpu_queue.sh > runs/cpu_queue.log 2>&1 &
# Pause it for timings or CI with `pkill -STOP -f "bin/attnseg |benchmarks/|attnseg.analysis"` and resume with -CONT
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/sanet_ablation.sh     # one SANet run per earlier choice, + all five
scripts/segformer_agreement.sh  # int8/bf16 argmax agreement on CamVid-trained SegFormer-B0 and B2
scripts/lite2_camvid.sh       # EfficientNet-Lite2 All-MLP (OS32, OS16) and LSeg, the zoo table

#!/usr/bin/env bash
# Train the checkpoint zoo (issue 4), one model after another, resumable: run it again after
# an interruption and each model continues from its last epoch; finished ones are skipped.
# Usage: scripts/train_zoo.sh [extra train flags]   (logs in runs/<name>/train.log)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RECIPE=(--model attention56 --width 0.25 --input-size 96 --eval-size 128 --epochs 24
        --batch-size 64 --lr 0.2 --eval-every 4)
train() {  # name seed attention residual
  local name=$1 seed=$2 attention=$3 residual=$4 out=runs/$1
  [ -f "$out/$name.safetensors" ] && { echo "done: $name"; return 0; }
  local resume=(); [ -f "$out/last.pt" ] && resume=(--resume)
  mkdir -p "$out"
  echo "training $name" && "$PY" -m resattn.train "${RECIPE[@]}" --attention "$attention" --residual "$residual" \
    --seed "$seed" --name "$name" --out "$out" "${resume[@]}" "${@:5}" >>"$out/train.log" 2>&1
}
train attention56_mixed_arl 0 mixed arl "$@" || exit 1
# The attention variants first: they are what the compare page is about; the baseline last.
train attention56_channel_arl 0 channel arl "$@" || exit 1
train attention56_spatial_arl 0 spatial arl "$@" || exit 1
train attention56_mixed_nal 0 mixed nal "$@" || exit 1
train attention56_none 0 none arl "$@" || exit 1
train attention56_mixed_arl_seed1 1 mixed arl "$@" || exit 1

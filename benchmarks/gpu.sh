#!/usr/bin/env bash
# One prepared GPU session (aimed at under 8 minutes on one data-centre GPU): the fast run (airbench,
# 3 seeds, bf16), the lab's heavy runs from random weights (vgg16, resnet18 with pretrained=false,
# vit, vit_recipe) and the fp32-vs-bf16 precision benchmark, with their figures written to OUT.
#
#   benchmarks/gpu.sh DATA_SOURCE OUT            # on the GPU machine (device cuda)
#   benchmarks/gpu.sh --tiny OUT                 # a check of the script itself on a CPU, in minutes
#
# DATA_SOURCE: anything `data_source` takes (the JPEG zip, the official archive). OUT gets
# fast/run.json, precision/precision.json, runs/<run>/metrics.json, summary.txt and the logs.
# The anchor: airbench94 trains in 3.83 s on an A100 (94.01 %, official data).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--tiny" ]]; then
    tiny=1
    out=${2:?usage: benchmarks/gpu.sh --tiny OUT}
    device=cpu
    # the demo's generated data, made tiny as in the end-to-end test
    study=(--configfile config/demo.yaml tests/e2e_study.yaml --config device=cpu precision=auto)
    name=synthetic
    seeds=(0)
    fast_epochs=(--epochs 1)
    steps=1
else
    tiny=0
    source=${1:?usage: benchmarks/gpu.sh DATA_SOURCE OUT}
    out=${2:?usage: benchmarks/gpu.sh DATA_SOURCE OUT}
    device=cuda
    study=(--config "data_source=$source" pretrained=false device=cuda precision=auto threads=4)
    # the dataset name Snakemake derives from the source (cifarlab.data.catalog.source_name)
    name=$(python -c "from cifarlab.data.catalog import source_name; print(source_name('$source'))")
    seeds=(0 1 2)
    fast_epochs=()
    steps=10
fi
mkdir -p "$out"
started=$(date +%s)
log() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$out/summary.txt"; }

log "device $device; torch $(python -c 'import torch; print(torch.__version__, torch.cuda.is_available())')"
data=results/data/$name
snakemake --cores 4 "$data/train.pt" "${study[@]}" >"$out/prepare.log" 2>&1
log "data prepared in $data"

python benchmarks/fast.py --threads 4 --device "$device" --out "$out/fast" run --data "$data" \
    --seeds "${seeds[@]}" --precision "$([[ $device == cuda ]] && echo bf16 || echo fp32)" \
    ${fast_epochs[@]+"${fast_epochs[@]}"} >"$out/fast.log" 2>&1
log "fast run: $(tail -n 1 "$out/fast.log")"

python benchmarks/fast.py --threads 4 --device "$device" --out "$out/precision" precision --data "$data" \
    --steps "$steps" >"$out/precision.log" 2>&1
log "precision benchmark:"
grep '^|' "$out/precision.log" | tee -a "$out/summary.txt"

runs=(vgg16 resnet18 vit vit_recipe)
targets=()
# each run's first seed (cifarlab.core.paths.METRICS)
for run in "${runs[@]}"; do targets+=("results/$name/runs/$run/seed0/metrics.json"); done
snakemake --cores 4 "${targets[@]}" "${study[@]}" >"$out/runs.log" 2>&1
for run in "${runs[@]}"; do
    mkdir -p "$out/runs/$run"
    cp "results/$name/runs/$run/seed0/metrics.json" "$out/runs/$run/"
    log "$run: $(python -c "
import json; m = json.load(open('results/$name/runs/$run/seed0/metrics.json'))
print(f\"{m['test_accuracy']:.2f} % after {m['epochs']} epochs, {m['train_seconds']:.0f} s of training, {m['device']}, {m['precision']}\")")"
done
log "done"

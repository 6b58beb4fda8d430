#!/usr/bin/env bash
# The GPU check: one script that runs where it is sent, on a bare machine (the device machine: one
# GPU, Python with torch, torchvision, numpy, scipy, matplotlib, pyyaml, pillow, jinja2, tensorboard,
# safetensors; no network, no Snakemake, no `pip install -e .`). benchmarks/README.md has the device
# command and its `carry`.
#
#   benchmarks/gpu.sh --pack [DATA_ZIP]      # here (package index reachable): wheels + data into
#                                            # benchmarks/gpu-pack/, its size against the 64 MiB
#   benchmarks/gpu.sh OUT [DATA_SOURCE]      # on the GPU machine: every stage, under 8 minutes
#   benchmarks/gpu.sh --tiny OUT             # the same stages on a CPU, tiny, in minutes
#
# Stages, each under its own timeout and all within GPU_BUDGET_S (default 360 s: with the
# machine's start and the transfers under 8 minutes; tiny 1200 s, each timeout x 4): install (the missing packages
# from the pack's wheels into a --target folder, nothing else touched; benchmarks/gpu_steps.py
# NEEDS), data (download + prepare), fast (airbench, 5 seeds, bf16: benchmarks/fast.py run),
# precision (fp32 vs bf16, one step of each model), lab-<run> (simple CNN, dropout CNN, vgg16 and
# resnet18 at 224 px with pretrained=false, the ViT: benchmarks/gpu.yaml's epochs), study (the
# simple CNN's optimizers over seeds, config/quick.yaml, with Welch tests). Snakemake does not fit
# the 64 MiB beside the data (it needs pulp, 16 MB, and connection_pool has no wheel), so each
# step runs through its own entry point (benchmarks/gpu_steps.py). Whatever fails, OUT gets
# summary.txt, summary.json and logs.tar.gz (every log and result file): 3 files, the device
# tool brings back at most 8. A diverged run is a result (status diverged), not a failure.
#
# Environment: GPU_PACK (the pack folder, default benchmarks/gpu-pack), GPU_WORK (trained models,
# prepared data; default a new folder under /tmp), GPU_BUDGET_S, PYTHON (default python3).
set -uo pipefail # no -e: a failed stage is recorded and the next one runs
{ # bash reads a script as it runs it; in braces it reads it whole first, so an edit of this file
  # while a check runs cannot break that run
cd "$(dirname "$0")/.."
root=$PWD
pack=${GPU_PACK:-benchmarks/gpu-pack}
python=${PYTHON:-python3}
mib=$((1024 * 1024))
limit=$((64 * mib)) # the device tool's working tree + carry limit

travelling_bytes() { # what the device tool sends: tracked + untracked-not-ignored files, and the pack
    local tree
    tree=$( (git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null || echo 0) | tail -n 1 | cut -f1)
    echo $((tree + $(du -sb "$pack" | cut -f1)))
}

do_pack() { # here: the wheels for the GPU machine's Python and the data, and their size
    local data=${1:-../shared/datasets/cifar10-jpeg.zip} version=${PACK_PYTHON_VERSION:-3.12}
    [[ -f $data ]] || { echo "--pack: no data file $data (give the CIFAR-10 zip as its argument)" >&2; exit 2; }
    local wheels
    mapfile -t wheels < <("$python" benchmarks/gpu_steps.py wheels)
    mkdir -p "$pack/wheels"
    rm -f "$pack"/wheels/*.whl
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$pack/wheels" "${wheels[@]}" || exit 1
    rm -f "$pack"/*.zip && cp "$data" "$pack/" # its name names the dataset (cifar10-jpeg)
    local total
    total=$(travelling_bytes)
    echo "pack: $(du -sb "$pack/wheels" | cut -f1) bytes of wheels (cp${version/./}), $(du -cb "$pack"/*.zip | tail -n 1 | cut -f1) bytes of data"
    echo "travels: $total bytes = $((total * 100 / limit)) % of 64 MiB ($(((limit - total) / 1024)) KiB left)"
    ((total <= limit)) || { echo "over the device tool's 64 MiB: it would refuse the call" >&2; exit 1; }
}

if [[ ${1:-} == --pack ]]; then
    do_pack "${2:-}"
    exit 0
fi
if [[ ${1:-} == --tiny ]]; then
    tiny=1
    out=${2:?usage: benchmarks/gpu.sh --tiny OUT}
else
    tiny=0
    out=${1:?usage: benchmarks/gpu.sh OUT [DATA_SOURCE] | --tiny OUT | --pack [DATA_ZIP]}
    source_=${2:-$(find "$pack" -maxdepth 1 -name '*.zip' | head -n 1)} # the zip --pack carried
fi
# OUT must be a new or empty folder: at the end everything in it but the summary is archived and
# removed, so a wrong OUT (an option, the checkout itself) must stop the script here, not there
if [[ -z $out || $out == -* ]]; then
    echo "gpu.sh: OUT '$out' is not a folder name; usage: benchmarks/gpu.sh OUT [DATA_SOURCE] | --tiny OUT | --pack [DATA_ZIP]" >&2
    exit 2
fi
if [[ -e $out && -n $(ls -A -- "$out" 2>/dev/null) ]]; then
    echo "gpu.sh: OUT $out is not empty; give a new or empty folder (the check archives and removes what it writes there)" >&2
    exit 2
fi
mkdir -p -- "$out" && out=$(cd -- "$out" && pwd) && [[ -n $out && $out != / ]] || {
    echo "gpu.sh: cannot make the folder OUT '$out'" >&2
    exit 2
}
work=${GPU_WORK:-$(mktemp -d /tmp/gpucheck.XXXXXX)}
mkdir -p "$work"
site=$work/site # the installed wheels (a --target folder: the machine's Python is not changed)
export PYTHONPATH=$root:$site PYTHONUNBUFFERED=1
started=$(date +%s)
: >"$out/stages.tsv"
mkdir -p "$out/logs"

finish() { # always: the summary, then everything else of OUT into one archive
    trap - EXIT INT TERM
    "$python" benchmarks/gpu_steps.py summary --out "$out" >"$out/logs/summary.log" 2>&1 \
        || echo "the summary failed: logs/summary.log" >>"$out/summary.txt"
    echo "$(($(date +%s) - started)) s in all" >>"$out/summary.txt"
    [[ -f $out/stages.tsv ]] || return # not the folder this run made: archive and remove nothing
    (cd -- "$out" && find . -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name summary.json -printf '%P\0' \
        | tar -czf "$work/logs.tar.gz" --null -T - && find . -mindepth 1 -maxdepth 1 \
        ! -name summary.txt ! -name summary.json -exec rm -rf {} + && mv "$work/logs.tar.gz" logs.tar.gz)
    cat "$out/summary.txt"
}
trap finish EXIT
trap 'exit 130' INT TERM

# stage NAME TIMEOUT_S COMMAND...: run under its timeout (cut to what the budget has left), log
# to logs/NAME.log, one row in stages.tsv: name, ok|failed|timeout|skipped, exit, seconds, timeout
stage() {
    local name=$1 seconds=$(($2 * scale)) rc status begin left
    shift 2
    left=$((budget - ($(date +%s) - started) - 20)) # 20 s kept for the summary and the archive
    ((seconds > left)) && seconds=$left
    if ((seconds < 5)); then
        printf '%s\tskipped\t0\t0\t%s\n' "$name" "$seconds" >>"$out/stages.tsv"
        return 1
    fi
    begin=$(date +%s)
    timeout --kill-after=10 "$seconds" "$@" >"$out/logs/$name.log" 2>&1
    rc=$?
    case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(($(date +%s) - begin))" "$seconds" >>"$out/stages.tsv"
    echo "[$(($(date +%s) - started)) s] $name: $status" >&2
    return $rc
}

machine() {
    "$python" - <<'PY'
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"machine: {gpu}, {platform.processor() or platform.machine()}, python {platform.python_version()}, "
      f"torch {torch.__version__}")
PY
}

if ((tiny)); then # the demo's generated data made tiny (tests/e2e_study.yaml), on the CPU
    budget=${GPU_BUDGET_S:-1200}
    scale=4 # the stages' timeouts are the GPU's: a loaded 2-core CPU took 3x the time of an idle one
    configs=(config/demo.yaml tests/e2e_study.yaml)
    study_configs=("${configs[@]}")
    over=(device=cpu threads=1)
    fast=(--threads 1 --device cpu)
    fast_run=(--seeds 0 1 --epochs 1 --precision fp32 --config "${configs[@]}")
    precision=(--steps 1 --batch-size 8)
else # the lab's data and sizes; every stage's time is this machine's
    budget=${GPU_BUDGET_S:-360}
    scale=1
    configs=(benchmarks/gpu.yaml)
    study_configs=(config/quick.yaml)
    over=("data_source=$source_" pretrained=false device=cuda precision=auto threads=8)
    fast=(--threads 8 --device cuda)
    fast_run=(--seeds 0 1 2 3 4 --precision bf16)
    precision=(--steps 10 --batch-size 256)
fi
lab_runs=(simple_cnn-sgd dropout_cnn-dropout0.1 vgg16 resnet18 vit)
# seconds each may take (vgg16 embeds 60,000 images at 224 px once, then trains its head on them)
declare -A lab_timeout=([simple_cnn-sgd]=40 [dropout_cnn-dropout0.1]=40 [vgg16]=75 [resnet18]=50 [vit]=45)
study_runs=(simple_cnn-sgd simple_cnn-adam simple_cnn-yogi)

machine >"$out/machine.txt" 2>&1 || echo "machine: torch does not import ($python)" >"$out/machine.txt"
echo "mode $([[ $tiny == 1 ]] && echo tiny || echo gpu), budget $budget s, work $work" >>"$out/machine.txt"
stage install 60 "$python" benchmarks/gpu_steps.py install --wheels "$pack/wheels" --target "$site"
stage data 90 "$python" benchmarks/gpu_steps.py data --work "$work/data" --out "$out/data" \
    --configfile "${configs[@]}" --config "${over[@]}"
data=$(find "$work/data/results/data" -name train.pt -printf '%h\n' 2>/dev/null | head -n 1)
for group in fast "${lab_runs[@]/#/lab-}" study; do # one work folder each (no run's checkpoint or
    mkdir -p "$work/$group/results" # cached features meets another's), the same prepared data
    [[ -d $work/data/results/data ]] && ln -sfn "$work/data/results/data" "$work/$group/results/data"
done

# the fast run's models stay in the work folder; its table and histories come to OUT
stage fast 120 "$python" benchmarks/fast.py "${fast[@]}" --out "$work/fast/out" run --data "$data" "${fast_run[@]}"
mkdir -p "$out/fast"
cp "$work/fast/out/run.json" "$out/fast/" 2>/dev/null
for seed_folder in "$work"/fast/out/airbench-seed*; do
    [[ -d $seed_folder ]] && mkdir -p "$out/fast/${seed_folder##*/}" && cp "$seed_folder/history.csv" "$out/fast/${seed_folder##*/}/"
done
stage precision 45 "$python" benchmarks/fast.py "${fast[@]}" --out "$out/precision" precision --data "$data" "${precision[@]}"
for run in "${lab_runs[@]}"; do
    stage "lab-$run" "${lab_timeout[$run]}" "$python" benchmarks/gpu_steps.py study --work "$work/lab-$run" --out "$out/lab/$run" \
        --runs "$run" --configfile "${configs[@]}" --config "${over[@]}"
done
stage study 60 "$python" benchmarks/gpu_steps.py study --work "$work/study" --out "$out/study" \
    --runs "${study_runs[@]}" --configfile "${study_configs[@]}" --config "${over[@]}"
exit 0 # the trap writes the summary and packs OUT
}

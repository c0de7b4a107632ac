#!/usr/bin/env bash
# Every GPU check the project owes, in ONE device call of at most 7 minutes (run from the
# repository root; no install and no package registry needed there: PYTHONPATH=src).
#
#   [CALL_S=420] [PACK=FILE.tgz] [PYTHON=python3] [GPU_NAME=...] \
#       benchmarks/gpu_session.sh [STAGE,STAGE...|all] [OUT_DIR]
#
# With the device tool, in ONE `run` call (kind nvidia-h100-x1, timeout_s 480), then give_back:
#
#   PACK=$OUT/results.tgz benchmarks/gpu_session.sh all gpu-results 2>&1 | tee $OUT/session.log
#
# The session budget is 15 minutes of device time, the machine's start (1 to 2 minutes) and its
# idle time included: this call (7 minutes) plus a rerun of one stage, if needed, fit; nothing
# else does. Ask `status` first (free): only when a GPU is lent, run this plan before anything.
#
# Results go to OUT_DIR/<gpu-slug>/ (default OUT_DIR gpu-results, ignored by git), <gpu-slug>
# from the real GPU name (`nvidia-smi`, else torch; GPU_NAME overrides), e.g.
# nvidia-h100-80gb-hbm3 or nvidia-h200: an H200 lent under the H100 kind is labelled an H200.
# After EVERY stage the directory is packed again into PACK (small text files only: logs, JSON,
# CSV, XML; no PNG, no caches), so a call stopped at its limit still returns the stages it
# finished. Where the repository lives, the lead copies them into the committed data directory:
#
#   tar xzf <files_at>/results.tgz -C docs/data/     # -> docs/data/<gpu-slug>/...
#   mkdir -p tests/data/cuda_traces; cp docs/data/<gpu-slug>/traces/*.json tests/data/cuda_traces/
#   PYTHONPATH=src python benchmarks/apriori_check.py docs/data/<gpu-slug>/calibration.json
#
# (the a-priori check predicts the 54 shared H100 configurations from the microbenchmark
# calibration alone; it runs on that machine because ../shared/data does not travel).
#
# Stages, in this order, each under its own cap (seconds) and under the call's deadline CALL_S
# (default 420 = 7 minutes); a stage past its cap is stopped (exit 124) and the next one starts.
# The first five caps add up to the 420 s: plan and study run in the time the earlier stages
# leave (they often end before their caps), else in a second call (`... plan,study`):
#   tests      60  nvidia-smi, versions, `lightning-to-energy sensors --json`, the opt-in GPU
#                  tests (NVML for real, synchronisation at window edges, bf16 on CUDA)
#   calibrate 150  `lightning-to-energy calibrate --budget-s 130`: calibration.json
#   traces     60  benchmarks/record_cuda_traces.py --out traces (golden CUDA op traces for
#                  target counting), skipped with a message where that script is not present
#   overhead   90  benchmarks/overhead.py, TOEnergy vs ThroughputMonitor in the same run (the
#                  ratio), bf16-mixed GPT then fp32 CNN
#   converge   60  examples/gpu_bf16.py from an empty calibration store: live convergence
#   plan       45  benchmarks/predict_step_time.py --device cuda: `predict` on one Lightning
#                  run's calibration against 3 more runs, seconds and joules per step (issue
#                  14: energy within 30 % with a measuring sensor); plan.json
#   study    rest  benchmarks/paper_study.py for the time left (it needs about 130 s): the bf16
#                  configurations first (every study configuration trains with AdamW: the
#                  shared data has neither); resumable in a later call
# Each stage writes <stage>.log (ending with its exit status, duration and UTC time) and a row
# of stages.csv (stage, exit, seconds, utc).
#
# Exit status: 2 for an unknown stage or a bad CALL_S (nothing runs), else the last failing
# stage's own: 124 for a stage stopped at its cap or the deadline, 3 while the study has
# configurations left (also when too little time was left to start it); 0 when all passed.
set -uo pipefail

stages="${1:-all}"
out="${2:-gpu-results}"
call_s="${CALL_S:-420}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"  # the device image's python3 is the one that holds torch
all_stages="tests,calibrate,traces,overhead,converge,plan,study"

cap_of() {  # a stage's own cap in seconds
    case "$1" in
        tests) echo 60 ;;
        calibrate) echo 150 ;;
        traces) echo 60 ;;
        overhead) echo 90 ;;
        converge) echo 60 ;;
        plan) echo 45 ;;
        study) echo 100000 ;;  # the time left in the call
    esac
}

run() {  # run a command until the stage's end, echo it first, and keep its output in the log
    echo "\$ $*" | tee -a "$log"
    local left=$((stage_end - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "not started: the stage's cap or the call's deadline (CALL_S=$call_s s) has" \
            "passed" | tee -a "$log"
        return 124
    fi
    # timeout stops the command's whole process group; -k: killed if it ignores the TERM
    timeout -k 5 "$left" "$@" 2>&1 | tee -a "$log"
    local rc="${PIPESTATUS[0]}"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "stopped at the stage's cap or the call's deadline (CALL_S=$call_s s, $left s" \
            "left when it began); rerun this stage alone in the next call" | tee -a "$log"
        rc=124
    fi
    return "$rc"
}

run_stage() {  # one stage; the last failing command's exit status, 0 when all passed
    local stage="$1" rc=0
    log="$dir/$stage.log"
    : > "$log"
    case "$stage" in
        tests)
            run nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv || rc=$?
            run "$py" -c "import platform, torch, lightning; print(platform.platform(), 'Python', platform.python_version(), 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'lightning', lightning.__version__, torch.cuda.get_device_name())" || rc=$?
            run "$py" -m lightning_to_energy sensors --json || rc=$?
            run "$py" -m pytest -q --run-gpu -m gpu -p no:cacheprovider --junitxml "$dir/tests.xml" tests/test_sensors_hardware.py tests/test_examples.py || rc=$?
            ;;
        calibrate)
            # a budget under the cap: the interpreter's start, the fit and the file fit too
            run "$py" -m lightning_to_energy calibrate --device cuda:0 --budget-s 130 --out "$dir/calibration.json" || rc=$?
            ;;
        traces)
            if [ -f benchmarks/record_cuda_traces.py ]; then
                run "$py" benchmarks/record_cuda_traces.py --out "$dir/traces" || rc=$?
            else
                echo "skipped: benchmarks/record_cuda_traces.py is not in this tree (branch" \
                    "i10-target writes it); nothing to record" | tee -a "$log"
            fi
            ;;
        overhead)
            # TOEnergy and ThroughputMonitor interleaved in the same process (the ratio from
            # one run); steps: two 2 s windows or more at the estimated H100 step times (GPT
            # about 15 ms, CNN about 8 ms); the tracker alone is not timed (--close-at "").
            run "$py" benchmarks/overhead.py --device cuda --rounds 2 --steps 300 --variants baseline,toenergy,throughput --close-at "" || rc=$?
            run "$py" benchmarks/overhead.py --device cuda --model cnn --precision 32-true --rounds 2 --steps 700 --variants baseline,toenergy,throughput --close-at "" || rc=$?
            ;;
        converge)
            # An empty calibration store: the run starts with no prior from an earlier run on
            # this machine (XDG_CACHE_HOME must be absolute).
            rm -rf "$dir/converge/cache"
            mkdir -p "$dir/converge/cache"
            local cache
            cache="$(cd "$dir/converge/cache" && pwd)"
            echo "XDG_CACHE_HOME=$cache" | tee -a "$log"
            XDG_CACHE_HOME="$cache" run "$py" examples/gpu_bf16.py --max-steps 2000 --out "$dir/converge" || rc=$?
            ;;
        plan)
            run "$py" benchmarks/predict_step_time.py --device cuda --steps 2000 --runs 3 --out "$dir/plan.json" || rc=$?
            ;;
        study)
            local left=$((stage_end - SECONDS - 20))  # 20 s for Python's start and imports
            if [ "$left" -lt 110 ]; then  # paper_study.py wants 106 s at least (--min-seconds 8)
                echo "not started: $((left + 20)) s left in this call (CALL_S=$call_s s)," \
                    "the study needs about 130 s; run it in a later call" | tee -a "$log"
                return 3
            fi
            local budget_min
            printf -v budget_min '%d.%02d' $((left / 60)) $((left % 60 * 100 / 60))
            # bf16 first (resumable: a later call, or the same command, skips what is done)
            run "$py" benchmarks/paper_study.py --out "$dir/study" --only bf16 --budget-min "$budget_min" --results-md "$dir/results.md" || rc=$?
            left=$((stage_end - SECONDS - 20))
            if [ "$rc" -eq 0 ] && [ "$left" -ge 110 ]; then  # the bf16 ones done: the others
                printf -v budget_min '%d.%02d' $((left / 60)) $((left % 60 * 100 / 60))
                run "$py" benchmarks/paper_study.py --out "$dir/study" --budget-min "$budget_min" --results-md "$dir/results.md" || rc=$?
            fi
            ;;
    esac
    return "$rc"
}

pack() {  # the GPU's directory, small text files only, into PACK
    [ -n "${PACK:-}" ] || return 0
    tar czf "$PACK.tmp" -C "$out" --exclude='*.png' --exclude='cache' --exclude='*.ckpt' \
        "$slug" && mv "$PACK.tmp" "$PACK"
}

if [ "$stages" = "all" ]; then
    stages="$all_stages"
fi
IFS=',' read -r -a wanted <<< "$stages"
[ "${#wanted[@]}" -gt 0 ] || wanted=("")
for stage in "${wanted[@]}"; do
    case ",$all_stages," in
        *",$stage,"*) [ -n "$stage" ] && continue ;;
    esac
    echo "usage: benchmarks/gpu_session.sh [STAGE,STAGE...|all] [OUT_DIR]; unknown stage" \
        "'$stage' (stages: ${all_stages//,/, })" >&2
    exit 2
done
if ! [[ "$call_s" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: benchmarks/gpu_session.sh: expected CALL_S to be a whole number of seconds" \
        "> 0 (the call's deadline), found '$call_s'; fix: e.g. CALL_S=420" >&2
    exit 2
fi
deadline=$((SECONDS + call_s))

gpu="${GPU_NAME:-}"
if [ -z "$gpu" ]; then
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
fi
if [ -z "$gpu" ]; then
    gpu="$("$py" -c 'import torch; print(torch.cuda.get_device_name())' 2>/dev/null)"
fi
gpu="${gpu:-unknown-gpu}"
slug="$(printf '%s' "$gpu" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-//' -e 's/-$//')"
dir="$out/$slug"
mkdir -p "$dir"
[ -f "$dir/stages.csv" ] || echo "stage,exit,seconds,utc" > "$dir/stages.csv"
{
    echo "gpu: $gpu"
    echo "started: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "stages: ${wanted[*]}"
} > "$dir/session.txt"
echo "GPU: $gpu -> results in $dir"

status=0
for stage in "${wanted[@]}"; do
    started=$SECONDS
    stage_end=$((SECONDS + $(cap_of "$stage")))
    [ "$stage_end" -gt "$deadline" ] && stage_end=$deadline
    run_stage "$stage"
    rc=$?
    echo "== stage $stage: exit $rc after $((SECONDS - started)) s, at $(date -u +%FT%TZ)" \
        | tee -a "$dir/$stage.log"
    echo "$stage,$rc,$((SECONDS - started)),$(date -u +%FT%TZ)" >> "$dir/stages.csv"
    [ "$rc" -ne 0 ] && status=$rc
    pack
done
exit "$status"

#!/usr/bin/env bash
# Every GPU check the project still owes, in stages that each fit a 10-minute call on a
# borrowed GPU machine (run from the repository root; no install needed: PYTHONPATH=src).
#
#   benchmarks/gpu_session.sh STAGE[,STAGE...] [OUT_DIR]   # OUT_DIR defaults to gpu-results
#
# A session has 30 minutes of device time, machine start included, and 10 minutes a call. A
# plan that fits (durations are estimates, not measurements):
#   call 1  check,sensors,counting,converge   about 6 min (issues 3 and 4)
#   call 2  study                             9 min (resumable)
#   call 3  study                             until it exits 0
#   call 4  overhead                          about 5 min (issue 4's GPU goal)
# The machine is given back 30 s after a call and at most 8 files come back from $OUT, so
# each call unpacks the previous results and packs them again, e.g.:
#   tar xzf gpu-carry/results.tgz 2>/dev/null; benchmarks/gpu_session.sh study;
#   tar czf $OUT/results.tgz gpu-results
# and between calls, where the repository lives, copy the returned results.tgz into
# gpu-carry/ (ignored by .gitignore) and name gpu-carry in the next call's carry.
# Each stage's log ends with how long it took.
#
# Stages (run in this order; each writes OUT_DIR/<stage>.log and its own files):
#   check     nvidia-smi, `lightning-to-energy sensors`, the opt-in GPU tests (NVML for real,
#             the bf16 example); about 2 minutes
#   sensors   benchmarks/sensors.py: counter vs integrated power, per-window thread time
#   overhead  benchmarks/overhead.py on CUDA: bf16-mixed GPT and fp32 CNN (about 5 minutes)
#   counting  benchmarks/counting.py on CUDA
#   converge  examples/gpu_bf16.py: a real run, predicted vs measured joules per window
#   study     benchmarks/paper_study.py, resumable: repeat until it exits 0 (2 or 3 calls; the
#             study directory must survive between calls, or be carried back and forth);
#             then, where the repository lives: `lightning-to-energy study eval
#             OUT_DIR/study-h100 --results-md docs/results.md`
#
# Exit status: 2 for an unknown stage (nothing runs), else the last failing stage's own (the
# study exits 3 while configurations are left), 0 when all passed.
set -uo pipefail

stages="${1:-}"
out="${2:-gpu-results}"
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python}"

run() {  # run a command, echo it first, and keep its output in the stage's log
    echo "\$ $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    return "${PIPESTATUS[0]}"
}

run_stage() {  # one stage; the last failing command's exit status, 0 when all passed
    local stage="$1" rc=0
    log="$out/$stage.log"
    case "$stage" in
        check)
            : > "$log"
            run nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv || rc=$?
            run "$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" || rc=$?
            run "$py" -m lightning_to_energy sensors || rc=$?
            if "$py" -c "import pytest" 2>/dev/null; then
                run "$py" -m pytest -q --run-gpu -m gpu -p no:cacheprovider tests || rc=$?
            else  # a device image without pytest: the bf16 example is the GPU test's body
                echo "pytest is not installed here: running the GPU example instead" | tee -a "$log"
                run "$py" examples/gpu_bf16.py --max-steps 200 --layers 2 --dim 128 --out "$out/check" || rc=$?
            fi
            ;;
        sensors)
            : > "$log"
            run "$py" benchmarks/sensors.py || rc=$?
            ;;
        overhead)
            : > "$log"
            run "$py" benchmarks/overhead.py --device cuda --rounds 6 || rc=$?
            run "$py" benchmarks/overhead.py --device cuda --model cnn --rounds 6 || rc=$?
            ;;
        counting)
            : > "$log"
            run "$py" benchmarks/counting.py --device cuda || rc=$?
            ;;
        converge)
            : > "$log"
            run "$py" examples/gpu_bf16.py --max-steps 3000 --out "$out/converge" || rc=$?
            ;;
        study)
            # appended, not truncated: the study is resumed over several calls
            run "$py" benchmarks/paper_study.py --out "$out/study-h100" --budget-min 9 \
                --results-md "$out/results.md" || rc=$?
            ;;
    esac
    return "$rc"
}

IFS=',' read -r -a wanted <<< "$stages"
[ "${#wanted[@]}" -gt 0 ] || wanted=("")
for stage in "${wanted[@]}"; do
    case "$stage" in
        check|sensors|overhead|counting|converge|study) ;;
        *)
            echo "usage: benchmarks/gpu_session.sh STAGE[,STAGE...] [OUT_DIR]; unknown stage" \
                "'$stage' (stages: check, sensors, overhead, counting, converge, study)" >&2
            exit 2
            ;;
    esac
done
status=0
for stage in "${wanted[@]}"; do
    started=$SECONDS
    run_stage "$stage"
    rc=$?
    echo "== stage $stage: exit $rc after $((SECONDS - started)) s" | tee -a "$out/$stage.log"
    [ "$rc" -ne 0 ] && status=$rc
done
exit "$status"

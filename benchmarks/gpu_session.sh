#!/usr/bin/env bash
# Every GPU check the project still owes, in stages that share a 10-minute call on a borrowed
# GPU machine (run from the repository root; no install needed: PYTHONPATH=src).
#
#   [CALL_S=570] [PYTHON=python3] benchmarks/gpu_session.sh STAGE[,STAGE...] [OUT_DIR]
#
# OUT_DIR defaults to gpu-results. CALL_S is this call's deadline in seconds from the start
# (default 570: a call's command may run 600 s, and the results must still be packed): a stage
# still running then is stopped (exit 124) and the stages after it are not started (a stage
# that hangs costs the call's time, not its results), and the study stage trains for whatever
# time is left (its --budget-min), so a call ends in time whatever the estimates below say.
#
# A session has 30 minutes of device time, and each call's machine start (a minute or more)
# and the 30 s the machine idles after it count too: that is three calls, the last one short.
# A plan that fits (durations are estimates from CPU runs and the sizes, not measurements):
#   call 1  check,sensors,counting,converge,study   about 4 min (issues 3 and 4), then the study
#   call 2  overhead,study                          about 6 min (issue 4's GPU goal), the study
#   call 3  study (CALL_S=<what is left>)           repeat, in later sessions too, until exit 0
# Name kind nvidia-h100-x1 in every call: the study refuses to add runs of another GPU (an
# H200) to its directory. The machine is given back 30 s after a call and at most 8 files come
# back from $OUT, so each call unpacks the previous results and packs them again:
#   tar xzf gpu-carry/results.tgz 2>/dev/null; benchmarks/gpu_session.sh STAGES; rc=$?;
#   tar czf $OUT/results.tgz gpu-results; exit $rc
# and between calls, where the repository lives, copy the returned results.tgz into
# gpu-carry/ (ignored by .gitignore) and name gpu-carry in the next call's carry.
# Each stage's log ends with its exit status, how long it took and the UTC time.
#
# Stages (run in this order; each writes OUT_DIR/<stage>.log and its own files):
#   check     nvidia-smi, versions, `lightning-to-energy sensors`, the opt-in GPU tests (NVML
#             for real, the bf16 example; without pytest, the example alone); about 2 minutes
#   sensors   benchmarks/sensors.py: counter vs integrated power, per-window thread time
#   overhead  benchmarks/overhead.py on CUDA: bf16-mixed GPT and fp32 CNN (about 6 minutes)
#   counting  benchmarks/counting.py on CUDA
#   converge  examples/gpu_bf16.py: a real run, predicted vs measured joules per window, from
#             an empty calibration store (OUT_DIR/converge/cache), report in OUT_DIR/converge
#   study     benchmarks/paper_study.py, resumable: repeat until it exits 0 (the study
#             directory OUT_DIR/study-h100 must survive between calls, or be carried back and
#             forth); then, where the repository lives: `lightning-to-energy study eval
#             OUT_DIR/study-h100 --results-md docs/results.md`
#
# Exit status: 2 for an unknown stage or a bad CALL_S (nothing runs), else the last failing
# stage's own: 124 for a stage stopped at the deadline (or not started after it), 3 while the
# study has configurations left (also when too little time was left to start it); 0 when all
# passed.
set -uo pipefail

stages="${1:-}"
out="${2:-gpu-results}"
call_s="${CALL_S:-570}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"  # the device image's python3 is the one that holds torch

run() {  # run a command until the deadline, echo it first, and keep its output in the log
    echo "\$ $*" | tee -a "$log"
    local left=$((deadline - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "not started: the call's deadline (CALL_S=$call_s s) has passed" | tee -a "$log"
        return 124
    fi
    # timeout stops the command's whole process group; -k: killed if it ignores the TERM
    timeout -k 5 "$left" "$@" 2>&1 | tee -a "$log"
    local rc="${PIPESTATUS[0]}"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "stopped at the call's deadline (CALL_S=$call_s s, $left s left when it began);" \
            "run this stage first in the next call" | tee -a "$log"
        rc=124
    fi
    return "$rc"
}

run_stage() {  # one stage; the last failing command's exit status, 0 when all passed
    local stage="$1" rc=0
    log="$out/$stage.log"
    case "$stage" in
        check)
            : > "$log"
            run nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv || rc=$?
            run "$py" -c "import platform, torch, lightning; print(platform.platform(), 'Python', platform.python_version(), 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'lightning', lightning.__version__, torch.cuda.get_device_name())" || rc=$?
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
            # Steps: a timed span of about two 2 s energy windows or more at the estimated
            # H100 step times (GPT about 15 ms, CNN about 8 ms): the output says how many
            # windows closed inside it, and what --steps to use where none did. The tracker
            # alone (--close-at, CPU side) is timed once, in the GPT run.
            run "$py" benchmarks/overhead.py --device cuda --rounds 5 --steps 300 || rc=$?
            run "$py" benchmarks/overhead.py --device cuda --model cnn --precision 32-true \
                --rounds 5 --steps 700 --close-at "" || rc=$?
            ;;
        counting)
            : > "$log"
            run "$py" benchmarks/counting.py --device cuda || rc=$?
            ;;
        converge)
            : > "$log"
            # An empty calibration store: the run starts with no prior from an earlier run on
            # this machine (XDG_CACHE_HOME must be absolute), and its calibration comes back.
            rm -rf "$out/converge/cache"
            mkdir -p "$out/converge/cache"
            local cache
            cache="$(cd "$out/converge/cache" && pwd)"
            echo "XDG_CACHE_HOME=$cache" | tee -a "$log"
            XDG_CACHE_HOME="$cache" run "$py" examples/gpu_bf16.py --max-steps 3000 \
                --out "$out/converge" || rc=$?
            ;;
        study)
            # appended, not truncated: the study is resumed over several calls
            local left=$((deadline - SECONDS - 20))  # 20 s for Python's start and imports
            if [ "$left" -lt 110 ]; then  # paper_study.py wants 106 s at least (--min-seconds 8)
                echo "not started: $((left + 20)) s left in this call (CALL_S=$call_s s)," \
                    "the study needs about 130 s; run it in the next call" | tee -a "$log"
                return 3
            fi
            local budget_min
            printf -v budget_min '%d.%02d' $((left / 60)) $((left % 60 * 100 / 60))
            run "$py" benchmarks/paper_study.py --out "$out/study-h100" \
                --budget-min "$budget_min" --results-md "$out/results.md" || rc=$?
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
if ! [[ "$call_s" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: benchmarks/gpu_session.sh: expected CALL_S to be a whole number of seconds" \
        "> 0 (the call's deadline), found '$call_s'; fix: e.g. CALL_S=570" >&2
    exit 2
fi
deadline=$((SECONDS + call_s))
mkdir -p "$out"
status=0
for stage in "${wanted[@]}"; do
    started=$SECONDS
    run_stage "$stage"
    rc=$?
    echo "== stage $stage: exit $rc after $((SECONDS - started)) s, at $(date -u +%FT%TZ)" \
        | tee -a "$out/$stage.log"
    [ "$rc" -ne 0 ] && status=$rc
done
exit "$status"

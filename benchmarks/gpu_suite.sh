#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md, in three parts that each end within ten minutes
# on one H100 (every command has its own time limit, so one slow compile cannot eat a part):
#
#   bash benchmarks/gpu_suite.sh check  OUT_DIR [FIXTURE_DIR] # exactness: fp32 parity, bf16 deviation
#                                                               (default tests/fixtures/tiny_2x)
#   bash benchmarks/gpu_suite.sh sample OUT_DIR               # L sampling, batch 1 / 64 / 128
#   bash benchmarks/gpu_suite.sh train  OUT_DIR               # S training step, batch 128
#
# JSON lines go to OUT_DIR/<part>.jsonl (and the terminal), warnings and errors to OUT_DIR/<part>.log.
set -uo pipefail
part=${1:?usage: gpu_suite.sh check|sample|train OUT_DIR [FIXTURE_DIR]}
out=${2:?usage: gpu_suite.sh check|sample|train OUT_DIR [FIXTURE_DIR]}
case $part in check | sample | train) ;; *)
    echo "gpu_suite.sh: unknown part '$part' (check, sample or train)" >&2
    exit 2
    ;;
esac
out=$(realpath -m "$out")
fixture=$(realpath -m "${3:-$(dirname "$0")/../tests/fixtures/tiny_2x}")
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >>"$out/$part.log" 2>&1
python -c "import torch; print('torch', torch.__version__)" >>"$out/$part.log" 2>&1
git rev-parse --short HEAD >>"$out/$part.log" 2>&1

run() {  # run SECONDS SCRIPT ARGS...: one benchmark under its own time limit
    local limit=$1
    shift
    echo "== $*" | tee -a "$out/$part.log"
    timeout "$limit" python "$@" 2>>"$out/$part.log" | tee -a "$out/$part.jsonl"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "== exit $rc (124: over ${limit}s)" | tee -a "$out/$part.log"
}

case $part in
check)
    run 300 benchmarks/gpu_check.py --fixture "$fixture"
    ;;
sample)
    run 120 benchmarks/bench_sample.py --model L --batch_size 1 64 --repeats 5 --warmup 2
    run 420 benchmarks/bench_sample.py --model L --batch_size 1 64 128 --compile --repeats 10 --warmup 3
    ;;
train)
    run 90 benchmarks/bench_train.py --model S --batch_size 128 --repeats 10 --warmup 3
    run 180 benchmarks/bench_train.py --model S --batch_size 128 --compile --repeats 10 --warmup 3
    run 180 benchmarks/bench_train.py --model S --batch_size 128 --compile --grad_checkpointing --repeats 10 --warmup 3
    run 120 benchmarks/bench_train.py --model S --batch_size 128 --compile --from_images --repeats 5 --warmup 3
    ;;
esac

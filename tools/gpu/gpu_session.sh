#!/usr/bin/env bash
# One GPU session of the step-mode work, run from the repository root: GPU tests, what users get
# through the CLI (per step mode), and a kernel profile of the paper-size step. Logs under $OUT
# (default: a fresh `mktemp -d`, printed at the start); a summary table last.
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"; echo "logs: $OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'graph generators', hasattr(torch.cuda.CUDAGraph, 'register_generator_state'))" | tee -a "$OUT/gpu.txt"
t0=$SECONDS
stage() { echo "[$1 done at $((SECONDS - t0)) s]"; }
for s in ${STAGES:-tests cli profile}; do case $s in
tests)
    timeout 240 python3 -m pytest -q -m gpu ${TESTS:-tests/engine/test_step.py tests/ops/test_triton_step.py} \
        -p no:cacheprovider -x >"$OUT/pytest_gpu.log" 2>&1; tail -6 "$OUT/pytest_gpu.log"; stage tests ;;
cli)
    timeout 420 python3 benchmarks/bench_cli.py ${CLI_ARGS:---mode auto --mode eager} \
        --json "$OUT/cli.jsonl" 2>&1 | tee "$OUT/cli.log" | grep -v '^{'; stage cli ;;
step)
    for c in ${COMPILE:-1 0}; do
        MAP3D_COMPILE=$c timeout 200 python3 benchmarks/bench_step.py --task ${STEP_TASK:-both} \
            --backend auto --cuda-graph 2>&1 | tee "$OUT/step_compile$c.log" | grep -v '^{' | tail -5
    done; stage step ;;
profile)
    timeout 120 python3 benchmarks/profile_step.py --rows ${ROWS:-25} 2>&1 | tee "$OUT/profile.log" | tail -32; stage profile ;;
esac; done

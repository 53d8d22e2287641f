#!/usr/bin/env bash
# One GPU session's checks and timings, logs under $OUT (see benchmarks/NOTES-gpu.md).
#   bash benchmarks/gpu_checks.sh kernels   # Triton parity tests + kernel timings (+ mamba-ssm)
#   bash benchmarks/gpu_checks.sh step      # all GPU tests + whole-step benchmark + kernels
# Builds mamba-ssm's selective-scan extension from .whl/ in the background when the tarball is
# there (set MAMBA=0 to skip).
set -uo pipefail
stage=${1:-kernels}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

tarball=$(ls .whl/mamba_ssm-*.tar.gz 2>/dev/null | head -1)
if [ "${MAMBA:-1}" = 1 ] && [ -n "$tarball" ]; then
    (python3 benchmarks/build_mamba_ssm.py "$tarball" /tmp/mamba >"$OUT/mamba_build.log" 2>&1;
     echo "exit $?" >>"$OUT/mamba_build.log") &
    build_pid=$!
fi

case $stage in
kernels)
    python3 -m pytest -q -m gpu tests/ops/test_triton_scan.py tests/ops/test_triton_fps.py \
        -p no:cacheprovider 2>&1 | tee "$OUT/pytest_triton.log" | tail -40
    python3 benchmarks/bench_kernels.py --only geometry,scan,bidirectional --sweep \
        --json "$OUT/kernels_triton.json" >"$OUT/bench_kernels_triton.log" 2>&1
    tail -n 80 "$OUT/bench_kernels_triton.log"
    ;;
step)
    python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" | tail -30
    python3 benchmarks/bench_step.py --json "$OUT/step.json" 2>&1 | tee "$OUT/bench_step.log" | tail -60
    ;;
esac

if [ -n "${build_pid:-}" ]; then
    wait "$build_pid"
    tail -3 "$OUT/mamba_build.log"
    export PYTHONPATH=/tmp/mamba/build:/tmp/mamba/src:$PYTHONPATH
    if python3 -c "import mamba_ssm" 2>"$OUT/mamba_import.log"; then
        python3 -m pytest -q -m gpu tests/ops/test_triton_scan.py -k mamba -p no:cacheprovider \
            2>&1 | tail -5
        python3 benchmarks/bench_kernels.py --only scan,mixer --json "$OUT/kernels_mamba.json" \
            >"$OUT/bench_kernels_mamba.log" 2>&1
        tail -n 40 "$OUT/bench_kernels_mamba.log"
    else
        tail -5 "$OUT/mamba_import.log"
    fi
fi

#!/usr/bin/env bash
# GPU session checks and timings, run from the repository root: bash tools/gpu/gpu_checks.sh STAGE...
# Logs go to $OUT; scratch files (JSON rows, also echoed in the logs, the smoke runs, the mamba-ssm
# build) to $WORK. Both default to folders under a fresh `mktemp -d`, printed at the start.
# Stages (any order, several allowed):
#   tests     Triton parity + step tests (tests/ops/test_triton_*.py)
#   alltests  every GPU test of the repository (pytest -m gpu)
#   kernels   bench_kernels.py (ops, scan, bidirectional, mixer) [SWEEP=1 adds the config sweep]
#   step      bench_step.py (pretrain + finetune step per backend, NaN checks off, CUDA graph;
#             STEP_ARGS adds options, e.g. "--backend auto")
#   smoke     the CLI on CUDA with bf16 autocast: pretrain -> finetune -> eval -> viz, part
#             segmentation and image pretraining on the smoke configs
#   mamba     after building mamba-ssm's scan extension (from .whl/, in the background from the
#             start): mamba parity test, scan/mixer kernels and the pretrain step with its scan
set -uo pipefail
WORK=${WORK:-$(mktemp -d)}
OUT=${OUT:-$WORK/logs}
mkdir -p "$WORK" "$OUT"
echo "logs: $OUT; scratch: $WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
stages=" $* "
tarball=$(ls .whl/mamba_ssm-*.tar.gz 2>/dev/null | head -1)
if [[ $stages == *" mamba "* && -n $tarball ]]; then
    (python3 tools/gpu/build_mamba_ssm.py "$tarball" "$WORK/mamba" >"$OUT/mamba_build.log" 2>&1;
     echo "exit $?" >>"$OUT/mamba_build.log") &
    build_pid=$!
fi
t0=$SECONDS
if [[ $stages == *" tests "* ]]; then
    python3 -m pytest -q -m gpu tests/ops/test_triton_scan.py tests/ops/test_triton_fps.py \
        tests/ops/test_triton_step.py -p no:cacheprovider >"$OUT/pytest_triton.log" 2>&1
    tail -8 "$OUT/pytest_triton.log"; echo "[tests done at $((SECONDS - t0)) s]"
fi
if [[ $stages == *" alltests "* ]]; then
    timeout "${ALLTESTS_TIMEOUT:-240}" python3 -m pytest -q -m gpu tests -p no:cacheprovider \
        >"$OUT/pytest_gpu.log" 2>&1
    tail -15 "$OUT/pytest_gpu.log"; echo "[alltests done at $((SECONDS - t0)) s]"
fi
if [[ $stages == *" smoke "* ]]; then
    smoke=$WORK/smoke; rm -rf "$smoke"
    {
        python3 -m map3d pretrain --config configs/smoke/pretrain.yaml --device cuda --out "$smoke/pre" &&
        python3 -m map3d finetune --config configs/smoke/finetune.yaml --device cuda \
            --pretrained "$smoke/pre/last.pt" --out "$smoke/cls" &&
        python3 -m map3d eval --checkpoint "$smoke/cls/last.pt" --device cuda &&
        python3 -m map3d viz --checkpoint "$smoke/pre/last.pt" --renderer matplotlib --index 0 \
            --device cuda --out "$smoke/viz" &&
        python3 -m map3d finetune --config configs/smoke/partseg.yaml --device cuda --out "$smoke/seg" &&
        python3 -m map3d eval --checkpoint "$smoke/seg/last.pt" --device cuda &&
        python3 -m map3d pretrain --config configs/pretrain/image_tiny.yaml --device cuda --epochs 1 \
            --out "$smoke/img"
    } >"$OUT/smoke.log" 2>&1
    echo "smoke exit $?"; grep -iE "error|traceback|accuracy|miou|loss" "$OUT/smoke.log" | tail -20
    echo "[smoke done at $((SECONDS - t0)) s]"
fi
if [[ $stages == *" step "* ]]; then
    python3 benchmarks/bench_step.py ${STEP_ARGS:-} --no-nan-checks --cuda-graph --json "$WORK/step.json" \
        >"$OUT/bench_step.log" 2>&1
    grep -v '^{' "$OUT/bench_step.log" | tail -12; echo "[step done at $((SECONDS - t0)) s]"
fi
if [[ $stages == *" kernels "* ]]; then
    sweep=""; [[ ${SWEEP:-0} = 1 ]] && sweep="--sweep"
    python3 benchmarks/bench_kernels.py --only "${KERNELS:-geometry,scan,bidirectional,mixer}" \
        $sweep --json "$WORK/kernels.json" >"$OUT/bench_kernels.log" 2>&1
    grep -v '^{' "$OUT/bench_kernels.log" | tail -90; echo "[kernels done at $((SECONDS - t0)) s]"
fi
if [[ -n ${build_pid:-} ]]; then
    wait "$build_pid"; tail -2 "$OUT/mamba_build.log"
    export PYTHONPATH=$WORK/mamba/build:$WORK/mamba/shim:$PYTHONPATH
    python3 -m pytest -q -m gpu tests/ops/test_triton_scan.py -k mamba -p no:cacheprovider 2>&1 | tail -3
    python3 benchmarks/bench_kernels.py --only "${MAMBA_KERNELS:-scan,mixer}" \
        --json "$WORK/kernels_mamba.json" >"$OUT/bench_kernels_mamba.log" 2>&1
    grep -v '^{' "$OUT/bench_kernels_mamba.log" | grep -i "mamba\|skipped" | tail -30
    python3 benchmarks/bench_step.py --task "${MAMBA_STEP_TASK:-pretrain}" --backend auto \
        --backend selective_scan=mamba_ssm --json "$WORK/step_mamba.json" \
        >"$OUT/bench_step_mamba.log" 2>&1
    grep -v '^{' "$OUT/bench_step_mamba.log" | tail -6; echo "[mamba done at $((SECONDS - t0)) s]"
fi

#!/usr/bin/env bash
# Build the optional compiled backends causal-conv1d, pytorch3d and KNN_CUDA from their source
# archives for one GPU architecture, on a machine with no package registry, then list, check,
# test and benchmark map3d with them. Run from the repository root.
#
#   source tools/gpu/build_backends.sh && backends_build   # starts the builds, returns at once
#   ...                                                    # other GPU work meanwhile
#   backends_wait; backends_verify                         # waits, then verifies (table last)
#   bash tools/gpu/build_backends.sh                       # the same in one go
#
# Inputs, in EXT (default .ext): causal_conv1d-*.tar.gz (its source release), pytorch3d-*.tar.gz
# and KNN_CUDA-*.tar.gz (archives of their release tags). Settings: ARCH (9.0), BUILD (default
# /tmp/map3d-backends; a build already finished there is not redone, and pytorch3d's ninja build
# resumes), BUILD_TIMEOUT (s, per build, 560), OUT (logs; default a fresh `mktemp -d`), STEP=0 to
# skip the whole-step benchmark, OPS=0 the per-op one. Five files in OUT: build_{causal_conv1d,pytorch3d,knn_cuda}.log,
# verify.log, pytest_backends.log.
#
# How each is built (one failed build does not stop the others, nor the verification):
# - causal-conv1d: `pip install --no-build-isolation --no-deps --no-index --target BUILD/site`
#   with CAUSAL_CONV1D_FORCE_BUILD=TRUE (no attempt to download a prebuilt wheel). Its setup.py
#   hard-codes nine -gencode targets, which TORCH_CUDA_ARCH_LIST does not override; the script
#   removes all but sm_${ARCH} from the extracted copy's setup.py (the only change to
#   third-party sources, printed in the log).
# - pytorch3d: `python3 setup.py build_ext --inplace` with FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=ARCH,
#   MAX_JOBS=nproc (its setup.py passes -std=c++17 itself), and with CUDA >= 13
#   NVCC_FLAGS=-static-global-template-stub=false (else its pulsar renderer fails to link); the
#   source folder goes on PYTHONPATH.
# - KNN_CUDA: the package is copied to BUILD/site; its first import compiles the extension with
#   torch.utils.cpp_extension.load (JIT, into the package folder); the script imports it once
#   and times that.

_bb_log() { echo "[backends $(date +%H:%M:%S)] $*"; }

_bb_setup() {
    EXT=${EXT:-$PWD/.ext}; BUILD=${BUILD:-/tmp/map3d-backends}; ARCH=${ARCH:-9.0}
    BUILD_TIMEOUT=${BUILD_TIMEOUT:-560}; OUT=${OUT:-$(mktemp -d)}
    mkdir -p "$OUT" "$BUILD/src" "$BUILD/site" "$BUILD/state"
    export EXT BUILD ARCH BUILD_TIMEOUT OUT
    BB_NPROC=$(nproc)
}

# the one folder an archive extracts to (kept if already there, for resumed builds)
_bb_extract() {
    local archive
    archive=$(ls "$EXT"/$1 2>/dev/null | sort -V | tail -1)
    [ -n "$archive" ] || { echo "no $1 in $EXT" >&2; return 1; }
    local top
    top=$(tar tzf "$archive" | head -1 | cut -d/ -f1)
    [ -d "$BUILD/src/$top" ] || tar xzf "$archive" -C "$BUILD/src" || return 1
    echo "$BUILD/src/$top"
}

_bb_causal_conv1d() {
    local src
    src=$(_bb_extract 'causal_conv1d-*.tar.gz') || return 1
    cd "$src" || return 1
    python3 - "$ARCH" <<'EOF' || return 1
import re, sys
keep = sys.argv[1].replace(".", "")
text = open("setup.py").read()
pattern = re.compile(r'cc_flag\.append\("-gencode"\)\n(\s*)cc_flag\.append\("arch=compute_(\w+),code=sm_\w+"\)')
kept = []
def drop(m):
    if m.group(2) == keep:
        kept.append(keep)
        return m.group(0)
    return "pass\n" + m.group(1) + "pass"
patched = pattern.sub(drop, text)
if text != patched:
    open("setup.py", "w").write(patched)
    print(f"setup.py patched: -gencode for sm_{keep} only (kept: {kept})")
if 'code=sm_' + keep + '"' not in patched:
    sys.exit(f"setup.py has no -gencode for sm_{keep}")
EOF
    CAUSAL_CONV1D_FORCE_BUILD=TRUE TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=4 \
        python3 -m pip install --no-build-isolation --no-deps --no-index --target "$BUILD/site" \
        --upgrade . || return 1
    cd "$BUILD/site" && python3 -c "import causal_conv1d, causal_conv1d_cuda; print('causal_conv1d', causal_conv1d.__version__, 'imports')"
}

_bb_pytorch3d() {
    local src
    src=$(_bb_extract 'pytorch3d-*.tar.gz') || return 1
    echo "$src" >"$BUILD/state/pytorch3d.path"
    cd "$src" || return 1
    # CUDA 13's nvcc makes __global__ template stubs static by default, which breaks the link of
    # pytorch3d's pulsar renderer (undefined fill_bg<true>); the flag restores the old behaviour
    local flags=""
    [ "$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')" -ge 13 ] 2>/dev/null \
        && flags="-static-global-template-stub=false"
    echo "NVCC_FLAGS=$flags"
    NVCC_FLAGS=$flags FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$BB_NPROC \
        python3 setup.py build_ext --inplace || return 1
    python3 -c "import torch, pytorch3d; from pytorch3d import _C; from pytorch3d.ops import knn_points; print('pytorch3d', pytorch3d.__version__, 'imports')"
}

_bb_knn_cuda() {
    local src
    src=$(_bb_extract 'KNN_CUDA-*.tar.gz') || return 1
    rm -rf "$BUILD/site/knn_cuda" && cp -r "$src/knn_cuda" "$BUILD/site/" || return 1
    cd "$BUILD/site" && TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$BB_NPROC python3 -c "
import time
start = time.perf_counter()
import knn_cuda
print(f'knn_cuda {knn_cuda.__version__}: first import (JIT compile) {time.perf_counter() - start:.1f} s')
start = time.perf_counter()
import importlib; importlib.reload(knn_cuda)
print(f'knn_cuda: import with the compiled extension cached {time.perf_counter() - start:.1f} s')"
}

# start one build in the background; BUILD/state/NAME.rc holds its exit status when it ends
_bb_start() {
    local name=$1
    if [ "$(cat "$BUILD/state/$name.rc" 2>/dev/null)" = 0 ]; then
        _bb_log "$name: already built in $BUILD"; return 0
    fi
    rm -f "$BUILD/state/$name.rc" "$BUILD/state/$name.s"
    (
        t0=$SECONDS
        timeout "$BUILD_TIMEOUT" bash -c "$(declare -f _bb_extract "_bb_$name"); BB_NPROC=$BB_NPROC; _bb_$name"
        rc=$?
        echo $((SECONDS - t0)) >"$BUILD/state/$name.s"
        echo "exit $rc after $((SECONDS - t0)) s"
        echo $rc >"$BUILD/state/$name.rc"
    ) >"$OUT/build_$name.log" 2>&1 &
    _bb_log "$name: building in the background (log $OUT/build_$name.log)"
}

backends_build() {
    _bb_setup
    _bb_log "sources $EXT, builds $BUILD, logs $OUT, arch $ARCH, $BB_NPROC cores"
    ls -la "$EXT"/*.tar.gz
    for name in pytorch3d causal_conv1d knn_cuda; do _bb_start $name; done
}

backends_wait() {
    _bb_setup
    local name
    for name in pytorch3d causal_conv1d knn_cuda; do
        while [ ! -f "$BUILD/state/$name.rc" ]; do sleep 5; done
        _bb_log "$name: exit $(cat "$BUILD/state/$name.rc") after $(cat "$BUILD/state/$name.s") s"
    done
}

_bb_pythonpath() {
    local p3d
    p3d=$(cat "$BUILD/state/pytorch3d.path" 2>/dev/null)
    echo "$PWD:$BUILD/site${p3d:+:$p3d}${PYTHONPATH:+:$PYTHONPATH}"
}

backends_verify() {
    _bb_setup
    local path t0=$SECONDS
    path=$(_bb_pythonpath)
    {
        _bb_log "PYTHONPATH=$path"
        PYTHONPATH=$path python3 -m map3d backends
        PYTHONPATH=$path timeout 120 python3 -m map3d backends --check
        echo "map3d backends --check: exit $?"
        PYTHONPATH=$path timeout 300 python3 -m pytest -q -m gpu -rs -p no:cacheprovider \
            tests/ops/test_dispatch.py tests/ops/test_external_adapters.py \
            tests/ops/test_backend_check.py >"$OUT/pytest_backends.log" 2>&1
        echo "pytest -m gpu (external backends): exit $?"
        grep -E "^(SKIPPED|FAILED|ERROR)" "$OUT/pytest_backends.log"
        tail -1 "$OUT/pytest_backends.log"
        if [ "${OPS:-1}" != 0 ]; then
            PYTHONPATH=$path timeout 240 python3 benchmarks/bench_ops.py --repeats 10 \
                --lengths 64 128 --backend auto,reference,triton,pytorch3d,knn_cuda,causal_conv1d \
                >"$BUILD/bench_ops.txt" 2>&1
            echo "bench_ops: exit $?"
        fi
        if [ "${STEP:-1}" != 0 ]; then
            # eager and CUDA-graph steps per backend setting; the slow reference eager only
            PYTHONPATH=$path timeout 300 python3 benchmarks/bench_step.py --task pretrain \
                --steps 10 --cuda-graph --backend auto --backend pytorch3d \
                --backend causal_conv1d=causal_conv1d --backend knn=knn_cuda 2>&1 | grep -v '^{'
            echo "bench_step: exit ${PIPESTATUS[0]}"
            PYTHONPATH=$path timeout 120 python3 benchmarks/bench_step.py --task pretrain \
                --reference-steps 2 --backend reference 2>&1 | grep -v '^{'
            echo "bench_step reference: exit ${PIPESTATUS[0]}"
        fi
        echo
        echo "builds (s, exit):"
        for name in pytorch3d causal_conv1d knn_cuda; do
            echo "  $name: $(cat "$BUILD/state/$name.s" 2>/dev/null) s, exit $(cat "$BUILD/state/$name.rc" 2>/dev/null)"
        done
        grep -h "JIT compile\|patched" "$OUT"/build_*.log
        echo
        echo "per-op medians (ms), each backend forced ('-': not an op of that backend):"
        cat "$BUILD/bench_ops.txt" 2>/dev/null | grep -E '^(\||[A-Z].*torch)'
        _bb_log "verify took $((SECONDS - t0)) s"
    } 2>&1 | tee -a "$OUT/verify.log"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
    backends_build
    backends_wait
    backends_verify
fi

"""Whole training-step benchmark (same as `map3d bench`): samples/s, peak memory and per-stage
times of the MAP pretraining step and the finetuning step, per op backend.

    python benchmarks/bench_step.py [--task pretrain] [--backend reference] [--json out.json]

When mamba-ssm imports but map3d has no `mamba_ssm` scan backend registered, a plain adapter
to its `selective_scan_fn` is registered so that `--backend selective_scan=mamba_ssm` works.
"""

from __future__ import annotations

import argparse
import sys

from bench_kernels import ensure_mamba_backend, mamba_selective_scan

from map3d.commands import BENCH

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=BENCH.description)
    BENCH.add_arguments(parser)
    args = parser.parse_args()
    ensure_mamba_backend(mamba_selective_scan())
    sys.exit(BENCH.run(args))

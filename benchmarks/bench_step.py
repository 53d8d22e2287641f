"""Whole training-step benchmark (same as `map3d bench`): samples/s, peak memory and per-stage
times of the MAP pretraining step and the finetuning step, per op backend.

    python benchmarks/bench_step.py [--task pretrain] [--backend reference] [--json out.json]

`--backend selective_scan=mamba_ssm` runs map3d's own adapter of mamba-ssm's
`selective_scan_fn` (map3d.ops.external) where mamba-ssm's compiled kernel loads.
"""

from __future__ import annotations

import argparse
import sys

from map3d.commands import BENCH

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=BENCH.description)
    BENCH.add_arguments(parser)
    args = parser.parse_args()
    sys.exit(BENCH.run(args))

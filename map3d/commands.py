"""`map3d backends | bench`: the declarations only, so that `map3d --help` stays fast.

Building the parser imports every `Command`; these two drive code that needs torch, so their
modules (`map3d.ops.dispatch`, `map3d.bench`) are imported when the command runs, not before.
"""

from __future__ import annotations

import argparse

from map3d.command import Command

# The backend-selection variable, named here without importing `map3d.ops.dispatch` (which
# defines it as ENV_VAR).
_ENV_VAR = "MAP3D_BACKEND"
_OPS = (
    "fps",
    "knn",
    "gather",
    "chamfer_distance",
    "selective_scan",
    "bidirectional_selective_scan",
    "causal_conv1d",
)


def _add_backends_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", choices=_OPS, help="show only this op")
    parser.add_argument(
        "--check",
        action="store_true",
        help="also compare every available backend with the reference on random inputs, "
        "forward and backward (seconds; exit status 1 on a mismatch)",
    )


def _run_backends(args: argparse.Namespace) -> int:
    from map3d.ops import dispatch

    rows = [r for r in dispatch.backend_table() if args.op in (None, r.op)]
    print(dispatch.format_backend_table(rows))
    if not args.check:
        return 0
    from map3d.ops.check import check_backends, format_check

    results = [r for r in check_backends() if args.op in (None, r.op.split()[0])]
    print()
    print(format_check(results))
    return 0 if all(r.ok for r in results) else 1


BACKENDS = Command(
    help="show which backend each op can use here, and why others are unavailable",
    add_arguments=_add_backends_arguments,
    run=_run_backends,
    description=(
        "Table of op x backend x availability. Selection per call: explicit backend= "
        f"argument > {_ENV_VAR} (e.g. `reference` or `selective_scan=triton,fps=reference`)"
        " > best available for the tensors' device and dtype."
    ),
)


def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["pretrain", "classify", "both"], default="both")
    parser.add_argument("--preset", default="hybridmt3d_s")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--backend",
        action="append",
        help="MAP3D_BACKEND value to time (repeatable); default: auto, reference, mamba_ssm",
    )
    parser.add_argument(
        "--reference-steps", type=int, default=3, help="timed steps for the slow reference backend"
    )
    parser.add_argument(
        "--no-nan-checks",
        action="store_true",
        help="also time `auto` with map3d.ops NaN checks (host syncs) off",
    )
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="also time each backend setting with the whole step replayed from a CUDA graph",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the backbone blocks and the patch embedding (default: as train.compile=auto, "
        "unless MAP3D_COMPILE=0)",
    )
    parser.add_argument("--json", help="write the results to this file")


def _run_bench(args: argparse.Namespace) -> int:
    from map3d.bench import run

    return run(args)


BENCH = Command(
    help="time whole training steps (samples/s, memory, per-stage breakdown) per backend",
    add_arguments=_add_bench_arguments,
    run=_run_bench,
    description="`map3d bench`: whole training-step throughput on one GPU, per op backend.",
)

"""Time each `map3d.ops` op at the paper's sizes on one device and print a table.

Sizes (MAP / Point-MAE pretraining, batch 128): FPS of 64 centers from 1024 points; kNN of
k=32 for those 64 centers; gather of the 64x32 patches; Chamfer on the 38 masked patches of 32
points (per patch, as Point-MAE computes it, and on the whole 38x32-point set); selective scan
with E=768 (2 x dim 384), N=16 at L=64/128/256; causal conv1d (width 4) at the same sizes.

    python benchmarks/bench_ops.py --device cpu --repeats 3
    python benchmarks/bench_ops.py --device cuda --backend reference --markdown
    python benchmarks/bench_ops.py --backend auto,reference,triton,pytorch3d,knn_cuda --markdown

With several comma-separated backends, one table has a column per backend ("-" where that
backend has no such op or does not take the inputs; "auto" is the automatic choice).

Times are medians of `--repeats` runs after one warm-up; "fwd+bwd" includes the backward pass
of a sum over the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from map3d import ops
from map3d.ops.dispatch import BackendUnavailableError

BATCH, POINTS, GROUPS, GROUP_SIZE, MASKED = 128, 1024, 64, 32, 38
CHANNELS, STATE, WIDTH = 768, 16, 4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _backward(out: torch.Tensor | tuple) -> None:
    (out[0] if isinstance(out, tuple) else out).float().sum().backward()


def cases(device: torch.device, backend: str | None, lengths: list[int]):
    """Yield (name, shape description, pass, thunk)."""
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, grad=False, scale=1.0):
        t = (torch.randn(*shape, generator=gen) * scale).to(device)
        return t.requires_grad_(grad)

    points = torch.rand(BATCH, POINTS, 3, generator=gen).to(device)
    yield (
        "fps",
        f"{BATCH}x{POINTS} -> {GROUPS}",
        "fwd",
        lambda: ops.fps(points, GROUPS, backend=backend),
    )
    centers = ops.gather(points, ops.fps(points, GROUPS))
    yield (
        "knn",
        f"{BATCH}x{GROUPS} in {POINTS}, k={GROUP_SIZE}",
        "fwd",
        lambda: ops.knn(centers, points, GROUP_SIZE, backend=backend),
    )
    idx = ops.knn(centers, points, GROUP_SIZE)[1]
    values = rand(BATCH, POINTS, 3, grad=True)
    yield (
        "gather",
        f"{BATCH}x{POINTS}x3 by {GROUPS}x{GROUP_SIZE}",
        "fwd+bwd",
        lambda: _backward(ops.gather(values, idx, backend=backend)),
    )
    pred = rand(BATCH * MASKED, GROUP_SIZE, 3, grad=True)
    target = rand(BATCH * MASKED, GROUP_SIZE, 3)
    for norm in (2, 1):
        yield (
            f"chamfer norm={norm}",
            f"{BATCH * MASKED}x{GROUP_SIZE} vs same",
            "fwd+bwd",
            (
                lambda norm=norm: _backward(
                    ops.chamfer_distance(pred, target, norm=norm, backend=backend)
                )
            ),
        )
    whole_pred = pred.detach().reshape(BATCH, MASKED * GROUP_SIZE, 3).requires_grad_()
    whole_target = target.reshape(BATCH, MASKED * GROUP_SIZE, 3)
    yield (
        "chamfer norm=2",
        f"{BATCH}x{MASKED * GROUP_SIZE} vs same",
        "fwd+bwd",
        lambda: _backward(ops.chamfer_distance(whole_pred, whole_target, backend=backend)),
    )
    for length in lengths:
        u = rand(BATCH, CHANNELS, length, grad=True)
        delta = rand(BATCH, CHANNELS, length, grad=True, scale=0.5)
        A = (-torch.rand(CHANNELS, STATE, generator=gen) * STATE).to(device).requires_grad_()
        B = rand(BATCH, STATE, length, grad=True)
        C = rand(BATCH, STATE, length, grad=True)
        D = rand(CHANNELS, grad=True)
        z = rand(BATCH, CHANNELS, length, grad=True)
        bias = rand(CHANNELS, grad=True, scale=0.1)
        shape = f"B={BATCH} E={CHANNELS} N={STATE} L={length}"

        def scan(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, bias=bias):
            return ops.selective_scan(u, delta, A, B, C, D, z, bias, True, backend=backend)

        def scan_forward(scan=scan):
            with torch.no_grad():
                scan()

        yield "selective_scan", shape, "fwd", scan_forward
        yield "selective_scan", shape, "fwd+bwd", lambda scan=scan: _backward(scan())
        weight = rand(CHANNELS, WIDTH, grad=True)
        conv_bias = rand(CHANNELS, grad=True)
        yield (
            "causal_conv1d",
            f"B={BATCH} E={CHANNELS} L={length} W={WIDTH}",
            "fwd+bwd",
            (
                lambda u=u, weight=weight, conv_bias=conv_bias: _backward(
                    ops.causal_conv1d(u, weight, conv_bias, "silu", backend=backend)
                )
            ),
        )


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU ({platform.processor() or platform.machine()}), {cores} cores, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--backend",
        default=None,
        help="force one backend (default: automatic), or compare several: a,b,c",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--only", nargs="+", default=None, help="op names to run (prefix match)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.backend and "," in args.backend:
        return compare(device, args)
    rows = []
    for name, shape, kind, thunk in cases(device, args.backend, args.lengths):
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ms = _time(thunk, device, args.repeats)
        memory = (
            f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"
            if device.type == "cuda"
            else "-"
        )
        rows.append((name, shape, kind, f"{ms:.2f}", memory))
        print(" | ".join(rows[-1]), flush=True)
    header = ("op", "shape", "pass", "ms (median)", "peak MiB")
    print(
        f"\n{describe_device(device)}; torch {torch.__version__}; backend {args.backend or 'auto'}"
        + (f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    )
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    return 0


def compare(device: torch.device, args) -> int:
    """One column per backend of `args.backend` (comma-separated), medians in ms."""
    names = [name.strip() for name in args.backend.split(",")]
    cells: dict[tuple[str, str, str], dict[str, str]] = {}
    for name in names:
        for op, shape, kind, thunk in cases(device, None if name == "auto" else name, args.lengths):
            if args.only and not any(op.startswith(o) for o in args.only):
                continue
            try:
                cell = f"{_time(thunk, device, args.repeats):.2f}"
            except (BackendUnavailableError, ValueError):
                cell = "-"
            row = cells.setdefault((op, shape, kind), {})
            row[name] = cell
            print(f"{name}: {op} | {shape} | {kind} | {cell}", flush=True)
    header = ("op", "shape", "pass", *(f"{n} ms" for n in names))
    rows = [(*key, *(row.get(n, "-") for n in names)) for key, row in cells.items()]
    print(f"\n{describe_device(device)}; torch {torch.__version__}; median of {args.repeats}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

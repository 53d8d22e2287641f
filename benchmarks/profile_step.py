"""Profile one MAP pretraining step (torch.profiler): the kernels and ops that take the GPU time.

    python benchmarks/profile_step.py [--preset hybridmt3d_s] [--batch 128] [--rows 40] [--compile]

Prints the wall time per step, the summed GPU kernel time, and the top ops by self CUDA time;
writes a Chrome trace when --trace is given.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

PROFILED_STEPS = 2


def gpu_ms_per_step(events, steps: int) -> float:
    """Device time per step (ms) of `events` (`prof.key_averages()` over `steps` steps).

    The table holds a row per device event (kernel, memcpy, memset) and a row per CPU op, and a
    CPU op's self device time is the time of the kernels it launched: summing every row counts
    each kernel twice. Only the device rows are summed (not GPU user annotations, which span
    kernels already counted)."""
    from torch.autograd import DeviceType

    device_us = sum(
        e.self_device_time_total
        for e in events
        if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)
    )
    return device_us / 1000 / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hybridmt3d_s")
    parser.add_argument("--task", default="pretrain", choices=["pretrain", "classify"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--backend", default=None, help="MAP3D_BACKEND value")
    parser.add_argument("--trace", help="write a Chrome trace here")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the blocks and the patch embedding (train.compile=on)",
    )
    args = parser.parse_args(argv)

    from map3d import ops
    from map3d.bench import _build, _Marks, _step_fn, backend_env

    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda")
    g = torch.Generator(device).manual_seed(0)
    model, optimizer = _build(args.task, args.preset, device, compiled=args.compile)
    points = torch.rand(args.batch, 1024, 3, device=device, generator=g) * 2 - 1
    labels = torch.randint(0, 40, (args.batch,), device=device, generator=g)
    step = _step_fn(args.task, model, optimizer, _Marks(), points, labels, g)
    ops.set_nan_checks(False)
    with backend_env(args.backend):
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / 5 * 1000
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(PROFILED_STEPS):
                step()
            torch.cuda.synchronize()
    events = prof.key_averages()
    gpu_total = gpu_ms_per_step(events, PROFILED_STEPS)
    print(
        f"wall {wall:.2f} ms/step; GPU kernel time {gpu_total:.2f} ms/step "
        f"({100 * gpu_total / wall:.0f}% busy)"
    )
    print(
        events.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70)
    )
    if args.trace:
        prof.export_chrome_trace(args.trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())

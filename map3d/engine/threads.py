"""How many CPU threads torch uses: chosen from the cores this process may actually use.

`torch.get_num_threads()` defaults to the machine's physical cores, whatever the CPU affinity,
container quota or number of processes on the host; on a small shared machine an
oversubscribed torch can be many times slower than one thread.
"""

from __future__ import annotations

import os
from pathlib import Path

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_CHOICE: str | None = None  # the last choice of configure_threads


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        cores = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def configure_threads(requested: int | None = None) -> str:
    """Set torch's intra-op thread count; returns (and keeps for `threads_note`) what was chosen
    and why. Nothing is logged here: the run logs `threads_note()` when its work starts, so a
    command refused before then still prints one line.

    In order: `requested` (a --threads flag) if > 0, else OMP_NUM_THREADS if set, else the
    available cores divided among the processes torchrun started on this host
    (LOCAL_WORLD_SIZE).
    """
    import torch

    global _CHOICE
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested is not None and requested > 0:
        threads, why = requested, "--threads"
    elif env.isdigit() and int(env) > 0:
        threads, why = int(env), "OMP_NUM_THREADS"
    else:
        cores = available_cores()
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        threads = max(1, cores // local)
        why = f"{cores} cores available" + (f" / {local} local processes" if local > 1 else "")
    torch.set_num_threads(threads)
    _CHOICE = f"torch CPU threads: {threads} ({why}; --threads N or OMP_NUM_THREADS=N to change)"
    return _CHOICE


def threads_note() -> str:
    """What `configure_threads` chose, or torch's own setting when it was not called."""
    if _CHOICE is not None:
        return _CHOICE
    import torch

    return f"torch CPU threads: {torch.get_num_threads()} (torch's default)"

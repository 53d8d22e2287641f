"""Helpers of the benchmark scripts that can be checked without a GPU."""

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import EventList, FunctionEvent

from benchmarks.profile_step import gpu_ms_per_step


def _event(id, name, start, end, device_type=DeviceType.CPU, **kwargs):
    return FunctionEvent(id, name, thread=0, start_us=start, end_us=end, use_device="cuda",
                         device_type=device_type, stack=[], input_shapes=[], **kwargs)


def fake_profile(steps: int) -> EventList:
    """What torch.profiler records for `steps` steps of two CPU ops, aten::mm launching a 300 us
    GEMM and aten::add a 100 us kernel, and a 50 us memcpy: each device event is listed, and
    its time is also attached to the CPU op that launched it."""
    events, ids = [], iter(range(1000))
    for step in range(steps):
        t = step * 1000
        mm = _event(next(ids), "aten::mm", t, t + 20)
        add = _event(next(ids), "aten::add", t + 30, t + 40)
        for op, kernel, duration in ((mm, "gemm_kernel", 300), (add, "add_kernel", 100)):
            op.append_kernel(kernel, 0, duration)
            events.append(_event(next(ids), kernel, t + 50, t + 50 + duration, DeviceType.CUDA))
        events += [mm, add, _event(next(ids), "Memcpy HtoD", t + 500, t + 550, DeviceType.CUDA)]
    events = EventList(events, use_device="cuda")
    events._build_tree()  # as the profiler does before key_averages()
    return events


def test_profile_step_counts_each_kernel_once():
    table = fake_profile(steps=2).key_averages()
    naive = sum(e.self_device_time_total for e in table) / 1000 / 2
    assert naive == pytest.approx(0.45 + 0.4)  # every kernel counted again in its launching op
    assert gpu_ms_per_step(table, steps=2) == pytest.approx(0.3 + 0.1 + 0.05)

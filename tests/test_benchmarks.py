"""Helpers of the benchmark scripts that can be checked without a GPU."""

import json

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import EventList, FunctionEvent

from benchmarks.profile_step import gpu_ms_per_step


def _event(id, name, start, end, device_type=DeviceType.CPU, **kwargs):
    return FunctionEvent(
        id,
        name,
        thread=0,
        start_us=start,
        end_us=end,
        use_device="cuda",
        device_type=device_type,
        stack=[],
        input_shapes=[],
        **kwargs,
    )


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


# ----------------------------------------------------------------------------- bench_cli


def test_bench_cli_takes_each_epoch_end_apart(tmp_path):
    from benchmarks.bench_cli import user_throughput

    # 4 epochs of 64 steps of 128 samples, a record every 8 steps taking 0.24 s, and epoch ends
    # after step 64 (warm-up: 5 s, its first evaluation compiling), 128 and 192 (0.1 s each)
    records, now = [], 0.0
    for step in range(8, 257, 8):
        now += 0.24 + {72: 5.0, 136: 0.1, 200: 0.1}.get(step, 0.0)
        records.append({"kind": "train", "step": step, "time": now})
        if step % 64 == 0:
            records.append({"kind": "epoch", "step": step, "time": now})
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = user_throughput(metrics, batch=128, skip_steps=64)
    assert figures["steps"] == 192
    assert figures["within_epoch"] == pytest.approx(8 * 128 / 0.24, abs=0.1)
    assert figures["epoch_ends_s"] == pytest.approx([5.0, 0.1, 0.1])
    assert figures["samples_per_s"] == pytest.approx(192 * 128 / (24 * 0.24 + 5.2), abs=0.1)
    assert figures["after_first_end"] == pytest.approx(184 * 128 / (23 * 0.24 + 0.2), abs=0.1)


# ----------------------------------------------------------------------------- pretrain_vs_scratch


def _pvs_record(pvs, args, arm, seeds, oa=50.0):
    return {
        "arm": arm,
        "settings": pvs.settings(args),
        "spec": pvs.arm_spec(args, arm),
        "text": pvs.ARMS[arm].text,
        "finetune": {str(s): {"test_oa": oa + s, "train_loss": 1.0} for s in seeds},
        "probe": {str(s): {"svm_oa": oa - s} for s in seeds},
    }


def test_pvs_every_arm_builds_its_pretraining_and_finetuning_models():
    from benchmarks import pretrain_vs_scratch as pvs
    from map3d.models import build_config

    for flags in (["--paper"], ["--smoke"]):
        args = pvs.parse_args(flags)
        size = {"num_groups": args.groups, "group_size": args.group_size}
        for arm in pvs.ARMS:
            spec = pvs.arm_spec(args, arm)
            build_config(args.preset, "classify", **size, **spec["encoder"])
            if spec["data"] is not None:
                cfg = build_config(args.preset, "pretrain", **size, **spec["pretrain"])
                assert cfg.serialization == spec["encoder"].get("serialization", "hilbert")
    args = pvs.parse_args(["--paper"])
    regions = {a: pvs.arm_spec(args, a)["pretrain"].get("num_regions") for a in pvs.ARMS}
    assert regions["map_synthetic"] == 8 and regions["mae"] == 1 and regions["ar"] == 64
    assert pvs.arm_spec(args, "map_release_order")["pretrain"]["decoder_order"] == "release"


def test_pvs_settings_are_common_and_arms_join_seed_by_seed(tmp_path):
    from benchmarks import pretrain_vs_scratch as pvs

    a = pvs.parse_args(["--paper", "--arms", "scratch", "mae", "--seeds", "0", "1", "2"])
    b = pvs.parse_args(["--paper", "--arms", "ar", "scratch", "--seeds", "3", "4"])
    assert pvs.settings(a) == pvs.settings(b)  # per-arm overrides are not settings
    for folder, args, arms, seeds in (
        (tmp_path / "p0", a, ["scratch", "mae"], [0, 1, 2]),
        (tmp_path / "p1", b, ["scratch", "ar"], [3, 4]),
    ):
        folder.mkdir()
        for arm in arms:
            pvs.write_json(folder / f"arm-{arm}.json", _pvs_record(pvs, args, arm, seeds))
    records = pvs.collect([tmp_path / "p0", tmp_path / "p1"])
    assert sorted(records["scratch"]["finetune"], key=int) == ["0", "1", "2", "3", "4"]
    text, numbers = pvs.table(records, "header")
    assert "mae" in numbers and "finetune_vs_scratch" in numbers["mae"]
    assert numbers["mae"]["finetune_vs_scratch"]["seeds"] == ["0", "1", "2"]
    assert numbers["ar"]["finetune_vs_scratch"]["seeds"] == ["3", "4"]  # paired by seed
    assert "| ar | token-level AR (R=G) |" in text

    changed = _pvs_record(pvs, b, "scratch", [5])
    changed["spec"]["encoder"] = {"serialization": "none"}
    pvs.write_json(tmp_path / "p1" / "arm-scratch.json", changed)
    with pytest.raises(SystemExit, match="defined differently"):
        pvs.collect([tmp_path / "p0", tmp_path / "p1"])
    other = pvs.parse_args(["--paper", "--shots", "4"])
    pvs.write_json(tmp_path / "p1" / "arm-scratch.json", _pvs_record(pvs, other, "scratch", [5]))
    with pytest.raises(SystemExit, match="settings differ"):
        pvs.collect([tmp_path / "p0", tmp_path / "p1"])


def test_pvs_a_stopped_run_is_not_recorded():
    from types import SimpleNamespace

    from benchmarks import pretrain_vs_scratch as pvs

    with pytest.raises(SystemExit, match="stopped \\(SIGTERM\\)"):
        pvs.finished(SimpleNamespace(stopped="SIGTERM"), "mae: pretraining")
    done = SimpleNamespace(stopped=None)
    assert pvs.finished(done, "x") is done


@pytest.mark.slow
def test_pvs_smoke_runs_reuses_and_merges(tmp_path, capsys):
    import torch

    from benchmarks import pretrain_vs_scratch as pvs

    tiny = [
        "--smoke",
        "--threads",
        str(torch.get_num_threads()),
        "--pretrain-samples",
        "32",
        "--pretrain-steps",
        "2",
        "--finetune-epochs",
        "1",
        "--test-samples",
        "10",
        "--no-probe",
    ]
    pvs.main([*tiny, "--out", str(tmp_path / "a"), "--arms", "scratch", "ar", "--seeds", "0"])
    pvs.main([*tiny, "--out", str(tmp_path / "b"), "--arms", "scratch", "--seeds", "1"])
    first = (tmp_path / "a" / "arm-ar.json").read_text()
    pvs.main([*tiny, "--out", str(tmp_path / "a"), "--arms", "ar", "--seeds", "0", "1"])
    again = json.loads((tmp_path / "a" / "arm-ar.json").read_text())
    assert again["finetune"]["0"] == json.loads(first)["finetune"]["0"]  # reused, not rerun
    assert again["pretrain"]["settings"]["spec"]["pretrain"]["num_regions"] == 16  # R = G
    pvs.main([*tiny, "--table-only", "--out", str(tmp_path / "a"), "--merge", str(tmp_path / "b")])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["numbers"]["scratch"]["finetune"]["seeds"] == ["0", "1"]
    assert summary["numbers"]["ar"]["finetune_vs_scratch"]["seeds"] == ["0", "1"]

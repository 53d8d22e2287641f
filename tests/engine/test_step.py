"""Step modes: eager everywhere, the whole step replayed from a CUDA graph where it can be."""

import pytest
import torch

from map3d.engine.config import apply_overrides, load_config
from map3d.engine.monitor import read_metrics
from map3d.engine.runs import train
from map3d.engine.step import (
    graph_problem,
    portable_optimizer_state,
    resolve_step_mode,
)

SMOKE_PRETRAIN = "configs/smoke/pretrain.yaml"
SMOKE_FINETUNE = "configs/smoke/finetune.yaml"


def test_auto_picks_eager_with_the_reason_and_cuda_graph_is_refused_where_it_cannot_run():
    assert resolve_step_mode("auto", None) == (
        "cuda_graph",
        "step mode cuda_graph (train.step_mode=auto)",
    )
    mode, note = resolve_step_mode("auto", "no GPU here")
    assert mode == "eager" and "no GPU here" in note
    assert resolve_step_mode("eager", None)[0] == "eager"
    with pytest.raises(ValueError, match="no GPU here; use train.step_mode=eager"):
        resolve_step_mode("cuda_graph", "no GPU here")
    with pytest.raises(ValueError, match="train.step_mode"):
        resolve_step_mode("fast", None)


def test_graph_problems_name_their_cause():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    kw = {"distributed": False, "grad_scaler": False, "task_problem": None}
    assert "CUDA device" in graph_problem(device=cpu, **kw)
    # several processes capture their gradient all-reduce only through NCCL (here: no group)
    assert "NCCL" in graph_problem(device=cuda, **{**kw, "distributed": True})
    assert "GradScaler" in graph_problem(device=cuda, **{**kw, "grad_scaler": True})
    if hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        assert graph_problem(device=cuda, **{**kw, "task_problem": "ratio"}) == "ratio"


def test_pretraining_with_a_mask_ratio_range_has_no_static_step():
    from map3d.engine.tasks.pretrain import PretrainTask
    from map3d.models import create_model

    task = PretrainTask()
    fixed = create_model(
        "hybridmt3d_tiny", task="pretrain", num_groups=8, group_size=8, num_regions=2
    )
    ranged = create_model(
        "hybridmt3d_tiny",
        task="pretrain",
        num_groups=8,
        group_size=8,
        num_regions=2,
        mask_ratio=(0.3, 0.7),
    )
    assert task.static_step_problem(fixed) is None
    assert "range" in task.static_step_problem(ranged)


def test_checkpointed_optimizer_state_has_plain_learning_rates():
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=torch.tensor(0.25), capturable=True)
    state = portable_optimizer_state(opt)
    assert state["param_groups"][0]["lr"] == 0.25
    assert state["param_groups"][0]["capturable"] is False
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)  # the live optimizer is untouched


def test_cpu_runs_are_eager_and_say_so(tmp_path, caplog):
    cfg = apply_overrides(load_config(SMOKE_PRETRAIN), ["train.max_steps=1"])
    with caplog.at_level("INFO"):
        train(cfg, tmp_path / "run")
    assert "step mode eager: CUDA graphs need a CUDA device" in caplog.text
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        train(apply_overrides(cfg, ["train.step_mode=cuda_graph"]), tmp_path / "graph")


# ----------------------------------------------------------------------------- on a GPU


def _curve(run_dir):
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]


def _gpu_cfg(config: str, mode: str, extra=()):
    return apply_overrides(
        load_config(config),
        [
            f"train.step_mode={mode}",
            "train.device=cuda",
            "train.log_every_steps=1",
            "schedule.epochs=3",
            *extra,
        ],
    )


@pytest.mark.gpu
@pytest.mark.parametrize("config", [SMOKE_PRETRAIN, SMOKE_FINETUNE])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_steps_follow_the_eager_run(tmp_path, config, precision):
    """Same seed, same batches: the graph replays the eager step's kernels, so the loss curves
    agree to rounding (fp32) or to bf16 noise. DataLoader workers (and their pin-memory thread)
    run during the capture."""
    extra = [f"train.precision={precision}", "data.num_workers=2"]
    eager = train(_gpu_cfg(config, "eager", extra), tmp_path / "eager")
    graph = train(_gpu_cfg(config, "cuda_graph", extra), tmp_path / "graph")
    assert eager.step == graph.step > 3  # the warm-up steps and several replays
    a, b = _curve(tmp_path / "eager"), _curve(tmp_path / "graph")
    tol = 1e-4 if precision == "fp32" else 3e-2
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=tol, atol=tol)


@pytest.mark.gpu
def test_cuda_graph_run_resumes_where_it_stopped(tmp_path):
    cfg = _gpu_cfg(SMOKE_PRETRAIN, "cuda_graph", ["train.precision=fp32"])
    full = train(cfg, tmp_path / "full")
    part = train(apply_overrides(cfg, ["train.max_steps=5"]), tmp_path / "part")
    assert part.stopped == "max_steps"
    done = train(cfg, tmp_path / "part", resume=tmp_path / "part" / "last.pt")
    assert done.step == full.step
    torch.testing.assert_close(
        torch.tensor(_curve(tmp_path / "part")),
        torch.tensor(_curve(tmp_path / "full")),
        rtol=1e-4,
        atol=1e-4,
    )
    # and an eager run resumes the graph run's checkpoint
    eager = train(
        apply_overrides(cfg, ["train.step_mode=eager", "schedule.epochs=4"]),
        tmp_path / "part",
        resume=tmp_path / "part" / "last.pt",
    )
    assert eager.step > full.step


@pytest.mark.gpu
def test_compiled_blocks_in_a_cuda_graph_follow_the_eager_run_and_resume(tmp_path, caplog):
    """train.compile=on under a CUDA graph vs eager blocks run eagerly: the same losses to fp32
    rounding (the compiled drop path draws eager's masks); a resumed compiled run repeats the
    uninterrupted one."""
    fp32 = ["train.precision=fp32", "model.overrides.drop_path_rate=0.2"]
    eager = train(_gpu_cfg(SMOKE_PRETRAIN, "eager", [*fp32, "train.compile=off"]), tmp_path / "e")
    cfg = _gpu_cfg(SMOKE_PRETRAIN, "cuda_graph", [*fp32, "train.compile=on"])
    with caplog.at_level("INFO"):
        full = train(cfg, tmp_path / "full")
    assert "blocks compiled (train.compile=on)" in caplog.text
    assert eager.step == full.step > 3
    curve = torch.tensor(_curve(tmp_path / "full"))
    torch.testing.assert_close(curve, torch.tensor(_curve(tmp_path / "e")), rtol=1e-4, atol=1e-4)
    part = train(apply_overrides(cfg, ["train.max_steps=5"]), tmp_path / "part")
    assert part.stopped == "max_steps"
    done = train(cfg, tmp_path / "part", resume=tmp_path / "part" / "last.pt")
    assert done.step == full.step
    torch.testing.assert_close(torch.tensor(_curve(tmp_path / "part")), curve, rtol=1e-4, atol=1e-4)

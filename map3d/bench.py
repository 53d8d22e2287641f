"""`map3d bench`: whole training-step throughput on one GPU, per op backend.

Times the MAP pretraining step of a preset (default hybridmt3d_s: N=1024 points, G=64 groups of
K=32, batch 128, bf16 autocast, AdamW) and the classification finetuning step (G=128), and
reports samples/s, peak GPU memory and a per-stage breakdown (grouping, embed, encoder,
decoder, loss, backward, optimizer) measured with CUDA events placed by forward hooks on the
model's own modules, for each backend setting (`auto`, `reference`, `mamba_ssm` when
installed); optionally with the whole step replayed from a CUDA graph (`graphed_step`). The
backbone blocks and the patch embedding are compiled as training compiles them
(`train.compile=auto`: unless MAP3D_COMPILE=0; `--compile` / `--no-compile` decide).
benchmarks/bench_step.py runs the same; benchmarks/bench_kernels.py times the ops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from map3d.atomic import atomic_write
from map3d.ops.dispatch import backend_env

STAGES = {
    "pretrain": ("grouping", "embed", "encoder", "decoder", "loss", "backward", "optimizer"),
    "classify": ("grouping", "embed", "encoder", "head", "loss", "backward", "optimizer"),
}


@dataclass
class StepResult:
    task: str
    backend: str
    batch: int
    ms_per_step: float
    samples_per_s: float
    peak_mem_gib: float
    stages_ms: dict[str, float] = field(default_factory=dict)
    grouping_share: float = 0.0
    compiled: bool = False
    note: str = ""


class _Marks:
    """CUDA events recorded at named points of a step (by hooks and by the step itself)."""

    def __init__(self):
        self.enabled = False
        self.events: list[tuple[str, torch.cuda.Event]] = []

    def mark(self, name: str) -> None:
        if self.enabled:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append((name, event))

    def durations(self) -> dict[str, float]:
        torch.cuda.synchronize()
        out = {}
        for (_, start), (name, end) in zip(self.events, self.events[1:]):
            out[name] = out.get(name, 0.0) + start.elapsed_time(end)
        return out


def _hook_stages(model: torch.nn.Module, task: str, marks: _Marks) -> None:
    """Stage boundaries: after the tokenizer, after the embeddings, after the encoder, after
    the decoder + head (pretraining)."""
    model.tokenizer.register_forward_hook(lambda *_: marks.mark("grouping"))
    model.encoder.pos_embed.register_forward_hook(lambda *_: marks.mark("embed"))
    model.encoder.register_forward_hook(lambda *_: marks.mark("encoder"))
    if task == "pretrain":
        model.head.register_forward_hook(lambda *_: marks.mark("decoder"))


def _build(task: str, preset: str, device: torch.device, compiled: bool = False):
    from map3d.engine.config import OptimConfig
    from map3d.engine.optim import build_optimizer
    from map3d.models import create_model
    from map3d.models.compile import compile_blocks

    if task == "pretrain":
        model = create_model(preset, task="pretrain")
    else:
        model = create_model(preset, task="classify", num_classes=40)
    model.to(device).train()
    if compiled:
        compile_blocks(model)
    return model, build_optimizer(model, OptimConfig())


def _step_fn(task, model, optimizer, marks, points, labels, generator, *, zero_grad=True):
    """One training step: bf16 autocast forward, backward, AdamW step (then grads to None)."""

    def step():
        marks.mark("start")
        # no autocast weight cache: the step may be captured in a CUDA graph
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            if task == "pretrain":
                loss = model(points, generator=generator).loss
            else:
                logits = model(points)
        if task == "classify":
            marks.mark("head")
            loss = F.cross_entropy(logits.float(), labels)
        marks.mark("loss")
        loss.backward()
        marks.mark("backward")
        optimizer.step()
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        marks.mark("optimizer")

    return step


def graphed_step(step_body, optimizer, warmup: int = 3):
    """Capture `step_body` (forward, backward, optimizer step; no zero_grad) in a CUDA graph
    after `warmup` eager steps on a side stream; returns the replay function.

    Needs: static input tensors (copy new batches into them), no host syncs in the step
    (`map3d.ops.set_nan_checks(False)`), randomness from the default CUDA generator, and an
    optimizer with `capturable=True` (set here).
    """
    for group in optimizer.param_groups:
        group["capturable"] = True
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            step_body()
    torch.cuda.current_stream().wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step_body()
    return graph.replay


def bench_step(
    task: str = "pretrain",
    backend: str | None = None,
    *,
    preset: str = "hybridmt3d_s",
    batch: int = 128,
    num_points: int = 1024,
    steps: int = 20,
    warmup: int = 3,
    nan_checks: bool = True,
    cuda_graph: bool = False,
    compile: bool | None = None,
) -> StepResult:
    """Time `steps` training steps (after `warmup`) of `task` with MAP3D_BACKEND=`backend`;
    `cuda_graph` replays the whole step from a CUDA graph (no per-stage times then); `compile`
    the backbone blocks and the patch embedding (None: as `train.compile=auto`)."""
    from map3d import ops
    from map3d.models.compile import resolve_compile

    device = torch.device("cuda")
    compiled = resolve_compile("auto" if compile is None else compile, device)[0]
    torch.manual_seed(0)
    generator = torch.Generator(device).manual_seed(0)
    model, optimizer = _build(task, preset, device, compiled)
    marks = _Marks()
    _hook_stages(model, task, marks)
    points = torch.rand(batch, num_points, 3, device=device, generator=generator) * 2 - 1
    labels = torch.randint(0, 40, (batch,), device=device, generator=generator)
    previous = ops.set_nan_checks(nan_checks and not cuda_graph)
    try:
        with backend_env(backend):
            if cuda_graph:  # default generator: graph-safe
                body = _step_fn(
                    task, model, optimizer, marks, points, labels, None, zero_grad=False
                )
                step = graphed_step(body, optimizer, warmup)
            else:
                step = _step_fn(task, model, optimizer, marks, points, labels, generator)
                for _ in range(warmup):
                    step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end) / steps
            peak = torch.cuda.max_memory_allocated() / 2**30
            per_stage: dict[str, list[float]] = {name: [] for name in STAGES[task]}
            marks.enabled = not cuda_graph
            for _ in range(max(3, steps // 2) if not cuda_graph else 0):
                marks.events.clear()
                step()
                for name, value in marks.durations().items():
                    per_stage.setdefault(name, []).append(value)
            marks.enabled = False
    finally:
        ops.set_nan_checks(previous)
    stages = {k: round(statistics.median(v), 3) for k, v in per_stage.items() if v}
    total = sum(stages.values()) or 1.0
    return StepResult(
        task=task,
        backend=backend or "auto",
        batch=batch,
        ms_per_step=round(ms, 3),
        samples_per_s=round(batch * 1000.0 / ms, 1),
        peak_mem_gib=round(peak, 2),
        stages_ms=stages,
        grouping_share=round(stages.get("grouping", 0.0) / total, 4),
        compiled=compiled,
        note="CUDA graph (NaN checks off)"
        if cuda_graph
        else ""
        if nan_checks
        else "ops NaN checks off",
    )


def available_backends() -> list[str | None]:
    """None (automatic), "reference", and "selective_scan=mamba_ssm" when it can run."""
    from map3d.ops import dispatch

    settings: list[str | None] = [None, "reference"]
    dispatch._load_backends()
    mamba = dispatch._REGISTRY["selective_scan"].get("mamba_ssm")
    if mamba is not None and mamba.available() is None:
        settings.append("selective_scan=mamba_ssm")
    return settings


def format_results(results: list[StepResult]) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    lines = [f"map3d bench on {device} (torch {torch.__version__})"]
    header = (
        f"{'task':<9} {'backend':<26} {'batch':>5} {'ms/step':>9} {'samples/s':>10} "
        f"{'peak GiB':>8}  stages (ms)"
    )
    lines.append(header)
    for r in results:
        stages = " ".join(f"{k}={v:.2f}" for k, v in r.stages_ms.items())
        lines.append(
            f"{r.task:<9} {r.backend:<26} {r.batch:>5} {r.ms_per_step:>9.2f} "
            f"{r.samples_per_s:>10.1f} {r.peak_mem_gib:>8.2f}  {stages} "
            f"[grouping {100 * r.grouping_share:.1f}%] "
            f"{'compiled blocks' if r.compiled else 'eager blocks'} {r.note}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`map3d bench` (arguments: `map3d.commands.BENCH`)."""
    if not torch.cuda.is_available():
        print("map3d bench needs a CUDA device")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    tasks = ["pretrain", "classify"] if args.task == "both" else [args.task]
    settings = args.backend or available_backends()
    results = []
    started = time.time()
    for task in tasks:
        for setting in settings:
            setting = None if setting in (None, "auto") else setting
            steps = args.reference_steps if setting == "reference" else args.steps
            variants = [{}]  # the setting as is, then (auto only) the requested variants
            if setting is None and args.no_nan_checks:
                variants.append({"nan_checks": False})
            if args.cuda_graph:
                variants.append({"cuda_graph": True})
            for variant in variants:
                result = bench_step(
                    task,
                    setting,
                    preset=args.preset,
                    batch=args.batch,
                    num_points=args.points,
                    steps=steps,
                    compile=args.compile,
                    **variant,
                )
                results.append(result)
                print(json.dumps(asdict(result)), flush=True)
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(
                {"device": torch.cuda.get_device_name(), "results": [asdict(r) for r in results]},
                f,
                indent=1,
            )
    print(format_results(results))
    print(f"total {time.time() - started:.0f} s")
    return 0

"""Micro-benchmarks of map3d's ops per backend, at the paper's sizes and at L = 1024, 4096.

    python benchmarks/bench_kernels.py [--quick] [--sweep] [--json out.json]

Times (median of CUDA-event timed repeats after warm-up, `triton.testing.do_bench`) for:
selective scan forward and forward+backward (bf16 inputs, fp32 state), the bidirectional pair,
the BiMamba mixer forward+backward under bf16 autocast (and mamba-ssm's Mamba-2 layer when
mamba-ssm imports), FPS, kNN, Chamfer distance. Backends that are not available are skipped
and listed. Prints one table last; `--json` also writes every row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

ROWS: list[dict] = []
SKIPPED: list[str] = []


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def timed(fn, *, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median milliseconds of fn() (device time, CUDA events)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def graphed_ms(fn) -> float:
    """Median milliseconds of fn() replayed from a CUDA graph: GPU time only. Small ops timed
    eagerly (`timed`) measure the host's launch overhead as much as the kernels."""
    from triton.testing import do_bench

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return float(do_bench(graph.replay, return_mode="median"))


def record(group: str, case: str, backend: str, ms: float, **extra) -> None:
    row = {"group": group, "case": case, "backend": backend, "ms": round(ms, 4), **extra}
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def mamba_selective_scan():
    """mamba-ssm's compiled selective_scan_fn, or None."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # noqa: BLE001 - not installed, or its extension not built
        SKIPPED.append(f"mamba_ssm: {type(error).__name__}: {error}")
        return None
    return selective_scan_fn


def mamba_backend_available(selective_scan_fn) -> bool:
    """Whether `MAP3D_BACKEND=selective_scan=mamba_ssm` works here: `selective_scan_fn`
    imports and the ops package's own `mamba_ssm` adapter is available (else why not is listed
    with the skipped backends)."""
    from map3d.ops import dispatch

    if selective_scan_fn is None:
        return False
    reason = dispatch.unavailable_reason("selective_scan", "mamba_ssm")
    if reason is not None:
        SKIPPED.append(f"selective_scan=mamba_ssm: {reason}")
    return reason is None


def scan_inputs(batch, E, L, N=16, dtype=torch.bfloat16, grad=True):
    dev = "cuda"
    u = torch.randn(batch, E, L, device=dev, dtype=dtype)
    delta = (torch.rand(batch, E, L, device=dev) * 0.5 - 1.0).to(dtype)
    z = torch.randn(batch, E, L, device=dev, dtype=dtype)
    A = -torch.rand(E, N, device=dev) * 4 - 0.1
    Bm = torch.randn(batch, N, L, device=dev, dtype=dtype)
    Cm = torch.randn(batch, N, L, device=dev, dtype=dtype)
    D = torch.rand(E, device=dev)
    bias = torch.rand(E, device=dev) - 2
    tensors = [u, delta, A, Bm, Cm, D, z, bias]
    if grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def fwd_bwd(fn, tensors):
    out = fn(*tensors)
    dout = torch.randn_like(out)

    def run():
        for t in tensors:
            t.grad = None
        fn(*tensors).backward(dout)

    return run


SCAN_SIZES = [(128, 768, 64), (64, 768, 128), (32, 768, 256), (8, 768, 1024), (2, 768, 4096)]
MIXER_SIZES = [(128, 64, 384), (64, 128, 384), (32, 256, 384)]


def bench_scan(quick: bool, mamba_fn) -> None:
    from map3d.ops.reference.scan import selective_scan as reference
    from map3d.ops.triton.selective_scan import selective_scan as triton_scan

    backends = {"triton": triton_scan, "reference": reference}
    if mamba_fn is not None:
        backends["mamba_ssm"] = mamba_fn
    for batch, E, L in SCAN_SIZES[:3] if quick else SCAN_SIZES:
        case = f"B={batch} E={E} L={L} N=16 bf16"
        tensors = scan_inputs(batch, E, L)
        for name, fn in backends.items():
            if name == "reference" and L > 1024:
                continue

            def call(*t, fn=fn):
                return fn(*t[:6], z=t[6], delta_bias=t[7], delta_softplus=True)

            with torch.no_grad():
                fwd = timed(lambda call=call, t=tensors: call(*t))
            both = timed(fwd_bwd(call, tensors))
            record("scan", case, name, fwd, kind="fwd")
            record("scan", case, name, both, kind="fwd+bwd")


def bench_bidirectional(quick: bool) -> None:
    from map3d.ops import bidirectional_selective_scan
    from map3d.ops.triton.selective_scan import selective_scan as triton_scan

    for batch, E, L in SCAN_SIZES[:3] if quick else SCAN_SIZES[:4]:
        case = f"B={batch} E={E} L={L} bf16"
        f = scan_inputs(batch, E, L)
        b = scan_inputs(batch, E, L)
        z = f[6]
        leaves = f[:6] + [f[7]] + b[:6] + [b[7]] + [z]

        def fused(*t):
            return bidirectional_selective_scan(
                *t[:14], z=t[14], delta_softplus=True, backend="triton"
            )

        def separate(*t):
            out = triton_scan(*t[:6], z=t[14], delta_bias=t[6], delta_softplus=True)
            out_b = triton_scan(*t[7:13], z=t[14].flip(-1), delta_bias=t[13], delta_softplus=True)
            return out + out_b.flip(-1)

        for name, fn in (("triton fused pair", fused), ("triton 2 scans+flips", separate)):
            record("bidirectional", case, name, timed(fwd_bwd(fn, leaves)), kind="fwd+bwd")


class _BiMamba2(torch.nn.Module):
    """Two mamba-ssm Mamba-2 layers (forward and flipped sequence), summed: the Mamba-2
    counterpart of the bidirectional mixer."""

    def __init__(self, dim: int):
        super().__init__()
        from mamba_ssm.modules.mamba2 import Mamba2

        kw = {"d_model": dim, "d_state": 16, "headdim": 64, "use_mem_eff_path": False}
        self.f, self.b = Mamba2(**kw), Mamba2(**kw)

    def forward(self, x):
        return self.f(x) + self.b(x.flip(1)).flip(1)


def bench_mixer(quick: bool, mamba_fn) -> None:
    from map3d.layers.bimamba import BiMamba
    from map3d.ops.dispatch import backend_env

    backends = ["triton", "reference"]
    if mamba_backend_available(mamba_fn):
        backends.insert(1, "mamba_ssm")
    for batch, L, C in MIXER_SIZES:
        case = f"B={batch} L={L} C={C} bf16-autocast"
        layer = BiMamba(C).cuda()
        x = torch.randn(batch, L, C, device="cuda", requires_grad=True)
        dy = torch.randn(batch, L, C, device="cuda")

        def step(module=layer, x=x, dy=dy):
            x.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = module(x)
            y.backward(dy)

        for name in backends:
            with backend_env(f"selective_scan={name}"):
                ms = timed(step)
            record("mixer", case, f"BiMamba scan={name}", ms, kind="fwd+bwd")
        if mamba_fn is not None:
            try:
                layer2 = _BiMamba2(C).cuda()
                ms = timed(lambda layer2=layer2: step(layer2))
                record("mixer", case, "mamba_ssm Mamba-2 x2 (Triton SSD)", ms, kind="fwd+bwd")
            except Exception as error:  # noqa: BLE001 - report any failure of the optional layer
                SKIPPED.append(f"Mamba-2: {type(error).__name__}: {error}")
        if quick:
            break


def bench_geometry(quick: bool) -> None:
    from map3d.ops.reference import geometry as ref
    from map3d.ops.triton.fps import fps as triton_fps

    for B, N, S in [(128, 1024, 64), (32, 2048, 128), (8, 8192, 512)]:
        points = torch.randn(B, N, 3, device="cuda")
        case = f"{S} of {N} x {B}"
        t_ref = timed(lambda p=points, s=S: ref.fps(p, s), warmup_ms=10, rep_ms=50)
        t_tri = timed(lambda p=points, s=S: triton_fps(p, s))
        same = bool(torch.equal(ref.fps(points, S), triton_fps(points, S)))
        record("fps", case, "reference", t_ref)
        record("fps", case, "triton", t_tri, speedup=round(t_ref / t_tri, 1), identical=same)
    from map3d.ops.triton import geometry as tri

    points = torch.randn(128, 1024, 3, device="cuda")
    centers = points[:, :64]
    tokens = torch.randn(128, 26, 3, device="cuda")
    for name, mod in (("reference", ref), ("triton", tri)):
        record(
            "knn",
            "k=32, 64 centers of 1024 x 128",
            name,
            timed(lambda mod=mod: mod.knn(centers, points, 32)),
        )
        record(
            "knn",
            "k=4, 26 of 26 centers x 128 (LNP)",
            name,
            timed(lambda mod=mod: mod.knn(tokens, tokens, 4)),
        )
    pred = torch.randn(128 * 38, 32, 3, device="cuda", requires_grad=True)
    target = torch.randn(128 * 38, 32, 3, device="cuda")
    for name, mod in (("reference", ref), ("triton", tri)):
        case = f"32 vs 32 x {128 * 38} (norm 2)"
        record(
            "chamfer",
            case,
            f"{name} fwd",
            timed(lambda mod=mod: mod.chamfer_distance(pred, target, norm=2)),
        )
        record(
            "chamfer",
            case,
            f"{name} fwd+bwd",
            timed(lambda mod=mod: mod.chamfer_distance(pred, target, norm=2).sum().backward()),
        )
    bench_conv()


def bench_conv() -> None:
    from map3d.ops.reference.scan import causal_conv1d as reference
    from map3d.ops.triton.conv import causal_conv1d as triton_conv

    for batch, L in ((128, 26), (128, 64), (32, 256)):
        E = 768
        xz = torch.randn(batch, L, 2 * E, device="cuda", dtype=torch.bfloat16)
        x = xz[..., :E].transpose(1, 2).detach().requires_grad_(True)  # mixer layout
        weight = torch.randn(E, 4, device="cuda", requires_grad=True)
        bias = torch.randn(E, device="cuda", requires_grad=True)
        case = f"B={batch} E={E} L={L} W=4 silu bf16"
        for name, fn in (("reference (autocast)", reference), ("triton", triton_conv)):

            def call(*t, fn=fn):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return fn(t[0], t[1], t[2], "silu")

            record("conv1d", case, name, timed(fwd_bwd(call, [x, weight, bias])), kind="fwd+bwd")


def sweep_scan_configs() -> None:
    """Time configurations of the chunked Triton scan kernels (fwd, fwd+bwd) at three sizes,
    with the compiler's register / spill / shared-memory report of each."""
    from map3d.ops.triton import selective_scan as scan

    original = (dict(scan.SHORT), dict(scan.LONG), scan.SEQUENTIAL_L)
    scan.SEQUENTIAL_L = 0  # every size on the chunked kernels
    sizes = [(128, 768, 64), (32, 768, 256), (8, 768, 1024)]
    inputs = {s: scan_inputs(*s) for s in sizes}

    def call(*t):
        return scan.selective_scan(*t[:6], z=t[6], delta_bias=t[7], delta_softplus=True)

    def resources(kind):
        kernel = scan.LAST_KERNELS.get(kind)
        if kernel is None:
            return {}
        return {
            "regs": getattr(kernel, "n_regs", None),
            "spills": getattr(kernel, "n_spills", None),
            "smem": getattr(getattr(kernel, "metadata", None), "shared", None),
        }

    try:
        for chunk in (32, 64):
            for cfg in ((1, 2), (2, 2), (2, 4), (4, 4)):
                for s in sizes:
                    for table in (scan.SHORT, scan.LONG):
                        table.update(chunk=chunk, fwd=cfg, bwd=original[0]["bwd"])
                    with torch.no_grad():
                        ms = timed(lambda s=s: call(*inputs[s]))
                    record(
                        "sweep-fwd",
                        f"B={s[0]} L={s[2]}",
                        f"chunk={chunk} fwd={cfg}",
                        ms,
                        **resources("fwd"),
                    )
                    for table in (scan.SHORT, scan.LONG):
                        table.update(fwd=original[0]["fwd"], bwd=cfg)
                    ms = timed(fwd_bwd(call, inputs[s]))
                    record(
                        "sweep-bwd",
                        f"B={s[0]} L={s[2]}",
                        f"chunk={chunk} bwd={cfg}",
                        ms,
                        **resources("bwd"),
                    )
    finally:
        scan.SHORT.clear()
        scan.SHORT.update(original[0])
        scan.LONG.clear()
        scan.LONG.update(original[1])
        scan.SEQUENTIAL_L = original[2]


def mixer_scan_inputs(batch: int, L: int, E: int = 768, N: int = 16) -> list[torch.Tensor]:
    """Both directions' inputs of a bidirectional mixer's scan, laid out as BiMamba makes them
    (bf16 channels-last u, delta, z; B, C transposed views of x_proj's output), then z."""
    g = torch.Generator("cuda").manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, device="cuda", generator=g) - 0.5

    def direction():
        u = rand(batch, L, E).bfloat16().transpose(1, 2)
        delta = (rand(batch, L, E) - 1).bfloat16().transpose(1, 2)
        proj = rand(batch, L, 8 + 2 * N).bfloat16()
        B, C = proj[..., 8 : 8 + N].transpose(1, 2), proj[..., 8 + N :].transpose(1, 2)
        return [u, delta, -torch.exp(rand(E, N)), B, C, rand(E), rand(E)]

    z = rand(batch, L, 2 * E).bfloat16().transpose(1, 2)[:, E:]
    return [t.requires_grad_(True) for t in direction() + direction() + [z]]


SEQUENTIAL_SWEEP_SIZES = [(128, 26), (128, 64), (32, 65), (32, 129), (32, 256), (8, 256)]
SEQUENTIAL_SWEEP_CONFIGS = [
    (16, 1, 1), (32, 1, 1), (32, 2, 1), (64, 2, 1), (64, 4, 1), (128, 4, 1), (128, 8, 1),
    (256, 8, 1), (32, 1, 2), (64, 2, 2), (128, 4, 2), (128, 4, 3),
]  # fmt: skip


def sweep_sequential_configs() -> None:
    """The bidirectional mixer's scan (E=768, bf16), graph-timed: the chunked kernels, then the
    sequential ones per (BLOCK_E, num_warps, stages), with the backward's registers / spills."""
    from map3d.ops.triton import selective_scan as scan

    saved = (scan.SEQUENTIAL_L, scan.SEQUENTIAL_CHANNELS, dict(scan.SEQUENTIAL))
    try:
        for batch, L in SEQUENTIAL_SWEEP_SIZES:
            t = mixer_scan_inputs(batch, L)

            def fwd(t=t):
                return scan.bidirectional_selective_scan_triton(
                    *t[:14], z=t[14], delta_softplus=True
                )

            dout = torch.randn_like(fwd())
            configs = [("chunked", None)] + [("sequential", c) for c in SEQUENTIAL_SWEEP_CONFIGS]
            for family, cfg in configs:
                if family == "chunked":
                    scan.SEQUENTIAL_L = 0
                else:
                    scan.SEQUENTIAL_L, scan.SEQUENTIAL_CHANNELS = 1 << 30, 0
                    scan.SEQUENTIAL.update(fwd=cfg, bwd=cfg)
                ms_fwd = graphed_ms(fwd)
                ms_both = graphed_ms(lambda fwd=fwd, dout=dout: fwd().backward(dout))
                kernel = scan.LAST_KERNELS.get("bwd")
                record(
                    "sweep-sequential",
                    f"B={batch} L={L}",
                    family if cfg is None else f"{family} {cfg}",
                    ms_both,
                    fwd_ms=round(ms_fwd, 4),
                    bwd_ms=round(ms_both - ms_fwd, 4),
                    regs=getattr(kernel, "n_regs", None),
                    spills=getattr(kernel, "n_spills", None),
                )
    finally:
        scan.SEQUENTIAL_L, scan.SEQUENTIAL_CHANNELS = saved[:2]
        scan.SEQUENTIAL.clear()
        scan.SEQUENTIAL.update(saved[2])


def sweep_conv_configs() -> None:
    """The mixer's causal conv1d (E=768, W=4, SiLU, bf16, channels-last), graph-timed forward
    and forward + backward: PyTorch's depthwise conv, then the Triton kernel per config."""
    from map3d import ops
    from map3d.ops.triton import conv

    saved = conv.CONFIG
    configs = [(32, 64, 4), (64, 32, 4), (128, 32, 4), (128, 16, 4), (256, 16, 4), (64, 16, 2)]
    try:
        for batch, L in ((128, 26), (32, 65), (32, 129)):
            E = 768
            xz = torch.randn(batch, L, 2 * E, device="cuda").bfloat16()
            leaves = (
                xz[..., :E].transpose(1, 2).requires_grad_(True),
                torch.randn(E, 4, device="cuda", requires_grad=True),
                torch.randn(E, device="cuda", requires_grad=True),
            )
            for backend, cfg in [("reference", None)] + [("triton", c) for c in configs]:
                conv.CONFIG = cfg or saved

                def fwd(backend=backend, leaves=leaves):
                    return ops.causal_conv1d(*leaves, "silu", backend=backend)

                dout = torch.randn_like(fwd())
                both = graphed_ms(
                    lambda fwd=fwd, dout=dout, leaves=leaves: torch.autograd.grad(
                        fwd(), leaves, dout
                    )
                )
                record(
                    "sweep-conv1d",
                    f"B={batch} E={E} L={L}",
                    backend if cfg is None else f"{backend} {cfg}",
                    both,
                    fwd_ms=round(graphed_ms(fwd), 4),
                )
    finally:
        conv.CONFIG = saved


def print_table() -> None:
    print(f"\n== bench_kernels on {device_name()} (torch {torch.__version__}) ==")
    width = max((len(r["case"]) for r in ROWS), default=10)
    for r in ROWS:
        extra = " ".join(
            f"{k}={v}" for k, v in r.items() if k not in ("group", "case", "backend", "ms")
        )
        print(
            f"{r['group']:<14} {r['case']:<{width}} {r['backend']:<36} {r['ms']:>10.3f} ms  {extra}"
        )
    for s in SKIPPED:
        print(f"skipped: {s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="paper sizes only")
    parser.add_argument(
        "--sweep", action="store_true", help="also sweep scan and conv1d kernel configs"
    )
    parser.add_argument(
        "--only", default="scan,bidirectional,mixer,geometry", help="comma-separated groups"
    )
    parser.add_argument("--json", help="write all rows to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    start = time.time()
    groups = set(args.only.split(","))
    mamba_fn = mamba_selective_scan()
    if "geometry" in groups:
        bench_geometry(args.quick)
    if "scan" in groups:
        bench_scan(args.quick, mamba_fn)
    if "bidirectional" in groups:
        bench_bidirectional(args.quick)
    if "mixer" in groups:
        bench_mixer(args.quick, mamba_fn)
    if args.sweep:
        sweep_sequential_configs()
        sweep_conv_configs()
        sweep_scan_configs()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(), "rows": ROWS, "skipped": SKIPPED}, f, indent=1)
    print_table()
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A short parity check of every available backend against the reference, on this machine.

`map3d backends --check` runs it: for each op and each available backend other than the
reference, random float32 inputs on the device (CUDA when there is one, else the CPU) go through
that backend and through the reference, forward and, for differentiable ops, backward. The
largest relative error over the outputs and input gradients is compared with `TOLERANCE`
(FPS compares the chosen indices exactly; kNN its distances, since ties may be broken either
way). A backend that does not accept the inputs is reported as skipped, with the reason. Seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from map3d import ops
from map3d.ops import dispatch

# float32 outputs and gradients, relative to the reference's norm; loose enough for TF32 matmuls
TOLERANCE = 1e-3


@dataclass
class CheckResult:
    """One (op, backend) comparison; `error` is None when it did not run (see `note`)."""

    op: str
    backend: str
    device: str
    error: float | None
    ok: bool
    note: str = ""


Case = Callable[[torch.device, torch.Generator], tuple[tuple, dict, tuple[int, ...]]]


def _rand(g: torch.Generator, device: torch.device, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, device=device)


def _fps_case(device, g):
    return (_rand(g, device, 3, 256, 3), 32), {}, ()


def _knn_case(device, g):
    return (_rand(g, device, 3, 64, 3), _rand(g, device, 3, 256, 3), 8), {}, (0, 1)


def _gather_case(device, g):
    values = _rand(g, device, 3, 64, 16)
    idx = torch.randint(0, 64, (3, 10, 4), generator=g, device=device)
    return (values, idx), {}, (0,)


def _chamfer_case(norm: int) -> Case:
    def case(device, g):
        return (_rand(g, device, 6, 32, 3), _rand(g, device, 6, 40, 3)), {"norm": norm}, (0, 1)

    return case


def _scan_case(device, g):
    b, e, n, length = 2, 16, 8, 64
    u, z = _rand(g, device, b, e, length) - 0.5, _rand(g, device, b, e, length) - 0.5
    delta = _rand(g, device, b, e, length) - 0.5
    a = -(0.5 + _rand(g, device, e, n))
    bb, cc = _rand(g, device, b, n, length) - 0.5, _rand(g, device, b, n, length) - 0.5
    d, bias = _rand(g, device, e), _rand(g, device, e) - 0.5
    return (u, delta, a, bb, cc, d, z, bias), {"delta_softplus": True}, tuple(range(8))


def _bidirectional_case(device, g):
    (u, delta, a, bb, cc, d, z, bias), options, _ = _scan_case(device, g)
    (u_b, delta_b, a_b, bb_b, cc_b, d_b, _, bias_b), _, _ = _scan_case(device, g)
    args = (u, delta, a, bb, cc, d, bias, u_b, delta_b, a_b, bb_b, cc_b, d_b, bias_b, z)
    return args, options, tuple(range(15))


def _conv_case(device, g):
    x, w, bias = _rand(g, device, 2, 16, 64), _rand(g, device, 16, 4), _rand(g, device, 16)
    return (x - 0.5, w - 0.5, bias), {"activation": "silu"}, (0, 1, 2)


# (op, label, case); the label tells variants of one op apart
CASES: tuple[tuple[str, str, Case], ...] = (
    ("fps", "fps", _fps_case),
    ("knn", "knn", _knn_case),
    ("gather", "gather", _gather_case),
    ("chamfer_distance", "chamfer_distance norm=2", _chamfer_case(2)),
    ("chamfer_distance", "chamfer_distance norm=1", _chamfer_case(1)),
    ("selective_scan", "selective_scan", _scan_case),
    ("bidirectional_selective_scan", "bidirectional_selective_scan", _bidirectional_case),
    ("causal_conv1d", "causal_conv1d", _conv_case),
)


def _outputs(op: str, backend: str, args: tuple, kwargs: dict, grads: tuple[int, ...]):
    """The op's compared outputs through `backend`, then the gradients of the inputs `grads`."""
    args = tuple(
        a.detach().clone().requires_grad_(i in grads)
        if isinstance(a, Tensor) and a.is_floating_point()
        else a
        for i, a in enumerate(args)
    )
    out = getattr(ops, op)(*args, **kwargs, backend=backend)
    if op == "knn":
        out = out[0]  # squared distances; indices may differ on ties
    if not grads:
        return [out]
    weights = torch.linspace(0.5, 1.5, out.numel(), device=out.device).view_as(out)
    inputs = [args[i] for i in grads]
    return [out, *torch.autograd.grad((out.float() * weights).sum(), inputs)]


def _relative_error(got: list[Tensor], want: list[Tensor]) -> float:
    worst = 0.0
    for a, b in zip((t.detach() for t in got), (t.detach() for t in want)):
        if not a.is_floating_point():
            worst = max(worst, float((a != b).float().mean()))  # share of differing indices
            continue
        scale = float(b.double().norm()) or 1.0
        worst = max(worst, float((a.double() - b.double()).norm()) / scale)
    return worst


def check_backends(device: str | torch.device | None = None, seed: int = 0) -> list[CheckResult]:
    """Compare every available non-reference backend with the reference (see module docstring)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = []
    for op, label, case in CASES:
        for row in dispatch.backend_table():
            if row.op != op or row.backend == "reference" or not row.available:
                continue
            g = torch.Generator(device).manual_seed(seed)
            args, kwargs, grads = case(device, g)
            try:
                got = _outputs(op, row.backend, args, kwargs, grads)
            except dispatch.BackendUnavailableError as err:
                results.append(
                    CheckResult(
                        label,
                        row.backend,
                        str(device),
                        None,
                        True,
                        f"skipped: {str(err).splitlines()[0]}",
                    )
                )
                continue
            want = _outputs(op, "reference", args, kwargs, grads)
            error = _relative_error(got, want)
            ok = error <= (0.0 if op == "fps" else TOLERANCE)
            results.append(CheckResult(label, row.backend, str(device), error, ok))
    return results


def format_check(results: list[CheckResult]) -> str:
    """A table of `check_backends` results, with a closing summary line."""
    if not results:
        return (
            "only the reference backend is available here: nothing to compare "
            "(`map3d backends` says why the others are unavailable)"
        )
    lines = [f"{'op':<30} {'backend':<14} {'device':<7} {'rel. error':>10}  result"]
    for r in results:
        error = "-" if r.error is None else f"{r.error:.2e}"
        verdict = r.note or ("ok" if r.ok else f"MISMATCH (tolerance {TOLERANCE:g})")
        lines.append(f"{r.op:<30} {r.backend:<14} {r.device:<7} {error:>10}  {verdict}")
    bad = sum(not r.ok for r in results)
    ran = sum(r.error is not None for r in results)
    lines.append(f"{ran - bad} passed, {bad} failed" if ran else "no backend took the inputs")
    return "\n".join(lines)

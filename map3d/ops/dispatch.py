"""Backend selection for `map3d.ops`: one public function per op, several implementations.

Each implementation of an op is a *backend*, registered with `register`. Per call, `resolve`
picks, in this order:

1. the explicit ``backend=`` argument of the op (``None`` or ``"auto"`` means "not given");
2. the ``MAP3D_BACKEND`` environment variable, read at every call:
   - ``MAP3D_BACKEND=reference``: one name for every op; applied to the ops that have an
     available backend of that name supporting the inputs, the others choose automatically;
   - ``MAP3D_BACKEND=selective_scan=triton,fps=reference``: per-op choices, strict like an
     explicit argument; a bare name may be mixed in as the default for the other ops;
3. the available backend of highest priority that supports the inputs (device, dtype, options).

Backend names: ``reference`` (pure PyTorch, always available, priority 0), ``triton`` (map3d's
own kernels, registered by `map3d.ops.triton`), ``mamba_ssm``, ``causal_conv1d``, ``pytorch3d``,
``knn_cuda`` (thin adapters in `map3d.ops.external`). Availability checks may import optional
packages, so each runs once and is remembered; `refresh()` forgets them (after installing a
package). Once they are known, `resolve` is plain dict lookups and `supports` calls, which
`torch.compile` traces without graph breaks.

A registered backend function takes exactly the public op's arguments (without ``backend``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from map3d.plugins import PluginModules

logger = logging.getLogger(__name__)

ENV_VAR = "MAP3D_BACKEND"
OPS = (
    "fps",
    "knn",
    "gather",
    "chamfer_distance",
    "selective_scan",
    "bidirectional_selective_scan",
    "causal_conv1d",
)

# An op that follows another: its backends are paired with the other's (same names, priorities
# and availability), and a per-op `MAP3D_BACKEND` entry of the other applies to it too when it
# has none of its own. Every `selective_scan` backend is also a `bidirectional_selective_scan`
# backend: two of its scans with flips (`map3d.ops.reference.scan.bidirectional_from`), unless
# the backend registers a fused one of its own (the Triton backend: one call, no flips).
FOLLOWS = {"bidirectional_selective_scan": "selective_scan"}

# Modules that register backends when imported; imported lazily at the first `resolve`.
_BACKEND_MODULES = ("map3d.ops.reference", "map3d.ops.external", "map3d.ops.triton")

INSTALL_HINTS = {
    "reference": "built in; always available",
    "triton": "pip install triton (bundled with CUDA builds of PyTorch); needs a CUDA device",
    "mamba_ssm": (
        "pip install --no-build-isolation mamba-ssm  (needs a CUDA build of PyTorch and nvcc;"
        " or `pip install --no-build-isolation map3d[gpu]`)"
    ),
    "causal_conv1d": (
        "pip install --no-build-isolation causal-conv1d  (needs a CUDA build of PyTorch and nvcc;"
        " or `pip install --no-build-isolation map3d[gpu]`)"
    ),
    "pytorch3d": (
        "pip install --no-build-isolation 'git+https://github.com/facebookresearch/pytorch3d.git'"
        "  (needs a CUDA build of PyTorch and nvcc)"
    ),
    "knn_cuda": (
        "pip install --upgrade"
        " https://github.com/unlimblue/KNN_CUDA/releases/download/0.2/KNN_CUDA-0.2-py3-none-any.whl"
        "  (compiles at first import; needs nvcc and ninja)"
    ),
}


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here (not installed, or wrong device/dtype)."""


@dataclass(frozen=True)
class Backend:
    """One implementation of one op."""

    op: str
    name: str
    fn: Callable
    available: Callable[[], str | None]  # None if usable here, else the reason why not
    supports: Callable[..., bool]  # (*tensors, **options) -> can this backend take these inputs
    priority: int
    install: str


# Plain dicts, not functools caches, so that torch.compile traces `resolve` without breaks
# once the availability of the backends it looks at is known.
_REGISTRY: dict[str, dict[str, Backend]] = {op: {} for op in OPS}
_ORDERED: dict[str, tuple[Backend, ...]] = {op: () for op in OPS}  # best first
_REASONS: dict[tuple[str, str], str | None] = {}  # (op, backend) -> why unavailable, or None
_ENV: dict[str, tuple[str | None, dict[str, str]]] = {}  # MAP3D_BACKEND value -> parsed
_PAIRED: set[str] = set()  # bidirectional_selective_scan backends made of two scans with flips
_PLUGINS = PluginModules(_BACKEND_MODULES, optional=True)
_module_errors = _PLUGINS.errors  # backend module -> why it could not be imported


def register(
    op: str,
    backend_name: str,
    fn: Callable,
    available: Callable[[], str | None],
    supports: Callable[..., bool],
    priority: int,
    *,
    install: str | None = None,
) -> None:
    """Register `fn` as backend `backend_name` of `op` (re-registering replaces it).

    Args:
        op: one of `OPS`.
        backend_name: e.g. "triton".
        fn: takes the public op's arguments (without `backend`), returns what the op returns.
        available: `() -> None` if the backend can run on this machine, else a short reason
            ("triton is not installed"). Called at most once (cached); may import lazily.
        supports: `(*tensors, **options) -> bool`: can it take these inputs? `tensors` are the
            op's tensor arguments in signature order (optional ones may be None), `options` its
            non-tensor arguments that can matter: fps (num_samples, random_start), knn (k),
            chamfer_distance (norm), selective_scan (delta_softplus, return_last_state),
            causal_conv1d (activation), gather (none), bidirectional_selective_scan
            (delta_softplus). A function without `**options` receives only the options it
            names. Called at every call of the op: keep it cheap (device/dtype/shape tests, no
            host sync).
        priority: higher wins in automatic selection; reference is 0, external adapters 10-20.
        install: how to get it; shown when it was requested explicitly but is unavailable.
    """
    if op not in _REGISTRY:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    _REGISTRY[op][backend_name] = Backend(
        op=op,
        name=backend_name,
        fn=fn,
        available=available,
        supports=_accepting_options(supports),
        priority=priority,
        install=install or INSTALL_HINTS.get(backend_name, "see the map3d README"),
    )
    _REASONS.pop((op, backend_name), None)
    _sort(op)
    if op == "bidirectional_selective_scan":
        _PAIRED.discard(backend_name)  # its own: a later selective_scan registration keeps it
    elif op == "selective_scan" and (
        backend_name in _PAIRED or backend_name not in _REGISTRY["bidirectional_selective_scan"]
    ):
        from map3d.ops.reference.scan import bidirectional_from

        scan = _REGISTRY[op][backend_name]
        register(
            "bidirectional_selective_scan", backend_name, bidirectional_from(fn), available,
            bidirectional_supports(scan.supports), priority, install=install,
        )  # fmt: skip
        _PAIRED.add(backend_name)


def bidirectional_supports(supports: Callable[..., bool]) -> Callable[..., bool]:
    """The `supports` of a bidirectional scan from that of a `selective_scan` backend: it takes
    both directions (`map3d.ops.bidirectional_selective_scan`'s tensors, in signature order)."""

    def both(u, delta, A, B, C, D, delta_bias, u_b, delta_b, A_b, B_b, C_b, D_b, delta_bias_b,
             z=None, delta_softplus=True) -> bool:  # fmt: skip
        options = {"delta_softplus": delta_softplus, "return_last_state": False}
        return supports(u, delta, A, B, C, D, z, delta_bias, **options) and supports(
            u_b, delta_b, A_b, B_b, C_b, D_b, z, delta_bias_b, **options
        )

    return both


def _accepting_options(supports: Callable[..., bool]) -> Callable[..., bool]:
    """Wrap `supports` so that it receives only the options it declares (all with **options)."""
    try:
        params = inspect.signature(supports).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume they take options
        return supports
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return supports
    named = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}

    def declared_options_only(*tensors, **options):
        return supports(*tensors, **{k: v for k, v in options.items() if k in named})

    return declared_options_only


def _load_backends() -> None:
    _PLUGINS.load()  # e.g. triton missing: its backends are simply absent


def _sort(op: str) -> None:
    _ORDERED[op] = tuple(sorted(_REGISTRY[op].values(), key=lambda b: -b.priority))


def _unavailable(backend: Backend) -> str | None:
    """Why `backend` cannot run here (None if it can); checked once, then looked up."""
    key = (backend.op, backend.name)
    if key in _REASONS:
        return _REASONS[key]
    return _check_availability(backend)


def _compiler_disabled(fn: Callable) -> Callable:
    """`fn`, kept out of `torch.compile` traces like `torch.compiler.disable(fn)`, but without
    importing torch._dynamo (seconds on a small CPU) until something is being compiled."""
    disabled: list[Callable] = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)

    return call


@_compiler_disabled
def _check_availability(backend: Backend) -> str | None:
    reason = backend.available()
    _REASONS[(backend.op, backend.name)] = reason
    return reason


def _environment(value: str) -> tuple[str | None, dict[str, str]]:
    if value not in _ENV:
        _ENV[value] = _parse_env(value)
    return _ENV[value]


def _parse_env(value: str) -> tuple[str | None, dict[str, str]]:
    """`MAP3D_BACKEND` -> (default name or None, {op: name})."""
    default, per_op = None, {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        if "=" in item:
            op, _, name = (s.strip() for s in item.partition("="))
            if op not in OPS:
                raise ValueError(f"{ENV_VAR}={value!r}: unknown op {op!r}; ops are {OPS}")
            per_op[op] = name
        else:
            if default is not None:
                raise ValueError(f"{ENV_VAR}={value!r}: more than one default backend")
            default = item
    return (None if default == "auto" else default), per_op


def _set_env(value: str | None) -> None:
    if value is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = value


@contextlib.contextmanager
def backend_env(value: str | None) -> Iterator[None]:
    """Set `MAP3D_BACKEND` to `value` for the block (None: unset, automatic selection); the
    previous value is restored afterwards."""
    old = os.environ.get(ENV_VAR)
    _set_env(value)
    try:
        yield
    finally:
        _set_env(old)


def resolve(op: str, backend: str | None, *tensors, **options) -> Callable:
    """The backend function to run `op` on these inputs (see the module docstring for order).

    Raises:
        ValueError: unknown op or backend name.
        BackendUnavailableError: an explicitly requested backend (argument or per-op
            `MAP3D_BACKEND` entry) cannot run here or cannot take these inputs.
    """
    _load_backends()
    if op not in _REGISTRY:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if backend is not None and backend != "auto":
        return _explicit(op, backend, "backend=", tensors, options).fn
    env = os.environ.get(ENV_VAR)
    if env:
        default, per_op = _environment(env)
        name = per_op.get(op, per_op.get(FOLLOWS.get(op, op)))
        if name is not None and name != "auto":
            return _explicit(op, name, f"{ENV_VAR}=", tensors, options).fn
        if default is not None:
            if default not in _known_names() and default not in INSTALL_HINTS:
                raise ValueError(
                    f"{ENV_VAR}={env!r}: unknown backend {default!r}; known: {_known_names()}"
                )
            chosen = _REGISTRY[op].get(default)
            if chosen and _unavailable(chosen) is None and chosen.supports(*tensors, **options):
                return chosen.fn
    for candidate in _ORDERED[op]:
        if _unavailable(candidate) is None and candidate.supports(*tensors, **options):
            return candidate.fn
    raise BackendUnavailableError(
        f"no backend of {op} supports these inputs ({_describe(tensors)}, {options})"
    )


def _explicit(op, name, source, tensors, options) -> Backend:
    chosen = _REGISTRY[op].get(name)
    if chosen is None:
        raise ValueError(
            f"{source}{name!r}: {op} has no backend {name!r}; "
            f"its backends are {sorted(_REGISTRY[op])}"
            + "".join(f"; {m} not loaded: {e}" for m, e in _module_errors.items())
        )
    reason = _unavailable(chosen)
    if reason is not None:
        raise BackendUnavailableError(
            f"{source}{name!r} was requested for {op} but is unavailable: {reason}. "
            f"To install: {chosen.install}"
        )
    if not chosen.supports(*tensors, **options):
        raise BackendUnavailableError(
            f"{source}{name!r} was requested for {op} but does not support these inputs "
            f"({_describe(tensors)}, {options}); use backend='reference' or 'auto'"
        )
    return chosen


def _known_names() -> list[str]:
    return sorted({name for backends in _REGISTRY.values() for name in backends})


def _describe(tensors) -> str:
    parts = [
        f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"
        for t in tensors
        if isinstance(t, torch.Tensor)
    ]
    return "; ".join(parts)


def unavailable_reason(op: str, backend: str) -> str | None:
    """None if `backend` of `op` can run here, else why not (also when it is not registered)."""
    _load_backends()
    chosen = _REGISTRY.get(op, {}).get(backend)
    if chosen is None:
        return f"{op} has no backend {backend!r}"
    return _unavailable(chosen)


def refresh() -> None:
    """Forget cached availability checks (e.g. after installing a package)."""
    _REASONS.clear()
    _ENV.clear()


@dataclass(frozen=True)
class BackendRow:
    op: str
    backend: str
    priority: int
    available: bool
    reason: str  # why not available ("" if available)


def backend_table() -> list[BackendRow]:
    """One row per (op, registered backend), best first within each op."""
    _load_backends()
    rows = []
    for op in OPS:
        for b in _ORDERED[op]:
            reason = _unavailable(b)
            rows.append(BackendRow(op, b.name, b.priority, reason is None, reason or ""))
    return rows


def format_backend_table(rows: list[BackendRow] | None = None) -> str:
    """`backend_table()` as plain aligned text."""
    rows = backend_table() if rows is None else rows
    header = ("op", "backend", "priority", "available")
    lines = [
        (r.op, r.backend, str(r.priority), "yes" if r.available else f"no: {r.reason}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(3)]
    out = []
    for row in [header, *lines]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    for module, error in _module_errors.items():
        out.append(f"(module {module} not loaded: {error})")
    env = os.environ.get(ENV_VAR)
    out.append(f"{ENV_VAR}={env}" if env else f"{ENV_VAR} is not set: automatic selection")
    return "\n".join(out)

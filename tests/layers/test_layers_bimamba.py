import pytest
import torch
import torch.nn.functional as F

from map3d.layers import BiMamba


def slow_direction(xz, conv, x_proj, dt_proj, a_log, d, d_state):
    """One direction written out step by step: causal conv, SiLU, dt/B/C, recurrence, gate."""
    b, two_e, length = xz.shape
    e = two_e // 2
    x, z = xz[:, :e], xz[:, e:]
    weight, bias = conv.weight[:, 0], conv.bias  # (E,W)
    width = weight.shape[1]
    conv_out = torch.zeros_like(x)
    for t in range(length):
        acc = bias.expand(b, e).clone()
        for w in range(width):
            src = t - (width - 1) + w
            if src >= 0:
                acc = acc + weight[:, w] * x[:, :, src]
        conv_out[:, :, t] = acc
    u = F.silu(conv_out)
    rank = dt_proj.weight.shape[1]
    a = -torch.exp(a_log)  # (E,N)
    h = torch.zeros(b, e, d_state, dtype=xz.dtype)
    ys = []
    for t in range(length):
        proj = x_proj(u[:, :, t])  # (B, rank + 2N)
        dt = F.softplus(dt_proj(proj[:, :rank]))  # (B,E)
        bm, cm = proj[:, rank : rank + d_state], proj[:, rank + d_state :]
        h = torch.exp(dt[..., None] * a) * h + dt[..., None] * bm[:, None] * u[:, :, t, None]
        y = (h * cm[:, None]).sum(-1) + d * u[:, :, t]
        ys.append(y * F.silu(z[:, :, t]))
    return torch.stack(ys, dim=-1)  # (B,E,L)


def slow_bimamba(m: BiMamba, x):
    xz = m.in_proj(x).transpose(1, 2)
    axis = -1 if m.flip == "sequence" else 1
    fwd = slow_direction(xz, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D, m.d_state)
    bwd = slow_direction(
        xz.flip(axis), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b, m.d_state
    ).flip(axis)
    y = fwd + bwd
    if m.divide_out:
        y = y / 2
    return m.out_proj(y.transpose(1, 2))


@pytest.mark.parametrize(
    "flip,divide_out", [("sequence", False), ("channel", False), ("sequence", True)]
)
def test_bimamba_matches_explicit_bidirectional_recurrence(flip, divide_out, generator):
    torch.manual_seed(0)
    m = BiMamba(8, d_state=4, flip=flip, divide_out=divide_out).double()
    with torch.no_grad():  # make the two directions differ
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    x = torch.randn(2, 7, 8, generator=generator, dtype=torch.float64)
    assert torch.allclose(m(x), slow_bimamba(m, x), atol=1e-10, rtol=1e-8)


def test_bimamba_is_bidirectional(generator):
    m = BiMamba(8, d_state=4)
    x = torch.randn(1, 6, 8, generator=generator)
    changed = x.clone()
    changed[:, -1] += 1.0
    diff = (m(x) - m(changed)).abs().sum(-1)[0]
    assert (diff[:-1] > 0).all()  # the first tokens see the last one through the backward scan


def test_parameter_names_and_init_follow_mamba_ssm():
    m = BiMamba(16, d_state=8)
    names = {n for n, _ in m.named_parameters()}
    expected = {
        "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
        "dt_proj.bias", "A_log", "D", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight",
        "dt_proj_b.weight", "dt_proj_b.bias", "A_b_log", "D_b", "out_proj.weight",
    }  # fmt: skip
    assert names == expected
    assert m.in_proj.weight.shape == (64, 16) and m.out_proj.weight.shape == (16, 32)
    assert m.conv1d.weight.shape == (32, 1, 4) and m.x_proj.weight.shape == (1 + 16, 32)
    assert torch.allclose(m.A_log.exp(), torch.arange(1.0, 9.0).expand(32, -1))
    assert torch.equal(m.D, torch.ones(32)) and torch.equal(m.D_b, torch.ones(32))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\(B,L,16\)"):
        BiMamba(16)(torch.randn(2, 5, 8))


def test_layers_and_models_import_only_the_public_ops():
    """Layers and models call `map3d.ops`, never a backend package (`map3d.ops.triton`, ...)
    by name: the dispatcher picks the backend, the bidirectional scan's included."""
    import ast
    from pathlib import Path

    import map3d.layers
    import map3d.models

    for package in (map3d.layers, map3d.models):
        for path in Path(package.__file__).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                assert not any(n.startswith("map3d.ops.") for n in names), (path, names)

"""map3d against the public release code: the same weights give the same numbers.

    python benchmarks/compare_releases.py --pointmae PATH --mamba3d PATH --pointmap PATH

PATH is a checkout of the public code (github Pang-Yatian/Point-MAE, xhanxu/Mamba3D,
yunzeliu/MAP); PointMAP's two model files (`PointMAP/Mamba3D.py`, `point_transformer.py`) run
inside the Mamba3D checkout, as they do in the release, so `--pointmap` also needs `--mamba3d`.
Nothing of them is copied: each release model is built from its own code in a child process,
with its compiled extensions replaced by map3d ops through `sys.modules` stubs (pointnet2_ops
FPS with its |p|^2 <= 1e-3 rule, knn_cuda, the chamfer extension, the mamba-ssm kernels
`mamba_inner_fn_no_out_proj` / `selective_scan_fn`; timm, only when it is not installed:
DropPath and trunc_normal_; transformers, only when it is not installed: names the vendored
mamba-ssm imports and never calls). Then:

1. seeded random weights (every tensor perturbed) are saved the way the release saves
   checkpoints, `torch.save({'base_model': state_dict}, path)`;
2. map3d reads that file (`load_checkpoint`: detection, conversion, compat) and builds its model;
3. both run in eval mode in float32 on the same clouds (and, for pretraining, the same mask);
   printed: the max abs difference of the encoder features, the logits and the pretraining loss.

The Mamba3D repository ships no pretraining model, so its loss row is "n/a".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import map3d
from map3d import ops
from map3d.engine.checkpoint import load_checkpoint
from map3d.tokenize.points import RELEASE_FPS_MIN_NORM2

BATCH, POINTS, SEED = 4, 1024, 0


# ----------------------------------------------------------------------------- stubs


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__path__ = []  # importable as a package
    sys.modules[name] = module
    return module


def _furthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """pointnet2_ops: start at index 0, never pick a point with |p|^2 <= 1e-3."""
    from map3d.ops.reference.geometry import fps

    exclude = xyz.square().sum(-1) <= RELEASE_FPS_MIN_NORM2
    return fps(xyz, npoint, exclude=exclude).int()


def _gather_operation(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B,C,N), (B,n) -> (B,C,n)."""
    return ops.gather(features.transpose(1, 2), idx.long()).transpose(1, 2).contiguous()


class _KNN(torch.nn.Module):
    def __init__(self, k: int, transpose_mode: bool = True):
        super().__init__()
        self.k = k

    def forward(self, ref: torch.Tensor, query: torch.Tensor):
        dist2, idx = ops.knn(query, ref, self.k)
        return dist2.sqrt(), idx


class _Chamfer(torch.nn.Module):
    norm = 2

    def cuda(self, device=None):
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ops.chamfer_distance(x, y, norm=self.norm).mean()


class _ChamferL1(_Chamfer):
    norm = 1


def _mamba_inner_no_out_proj(
    xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B=None, C=None,
    D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None, delta_softplus=True,
):  # fmt: skip
    """mamba-ssm's fused Mamba inner function without out_proj, from map3d ops: xz (B,2E,L)."""
    length = xz.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = ops.causal_conv1d(x, conv1d_weight.squeeze(1), conv1d_bias, "silu")
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), x_proj_weight)  # (BL, R+2N)
    rank, state = delta_proj_weight.shape[1], A.shape[1]
    dt, b_in, c_in = torch.split(x_dbl, [rank, state, state], dim=-1)
    delta = (dt @ delta_proj_weight.t()).view(-1, length, x.shape[1]).transpose(1, 2)
    b_in = b_in.view(-1, length, state).transpose(1, 2).contiguous()
    c_in = c_in.view(-1, length, state).transpose(1, 2).contiguous()
    return ops.selective_scan(
        x, delta, A, b_in, c_in, D, z, delta_bias, delta_softplus=delta_softplus
    )


def install_stubs() -> None:
    utils = _module("pointnet2_ops.pointnet2_utils", furthest_point_sample=_furthest_point_sample,
                    gather_operation=_gather_operation)  # fmt: skip
    _module("pointnet2_ops", pointnet2_utils=utils)
    _module("knn_cuda", KNN=_KNN)
    chamfer = _module("extensions.chamfer_dist", ChamferDistanceL1=_ChamferL1,
                      ChamferDistanceL2=_Chamfer)  # fmt: skip
    _module("extensions", chamfer_dist=chamfer)
    # Mamba3D's vendored mamba-ssm imports its kernels as the top-level package `ops`
    scan = _module("ops.selective_scan_interface", selective_scan_fn=ops.selective_scan,
                   mamba_inner_fn=None, bimamba_inner_fn=None,
                   mamba_inner_fn_no_out_proj=_mamba_inner_no_out_proj)  # fmt: skip
    triton = _module("ops.triton")
    triton.selective_state_update = _module(
        "ops.triton.selective_state_update", selective_state_update=None
    )
    triton.layernorm = _module(
        "ops.triton.layernorm", RMSNorm=type("RMSNorm", (torch.nn.Module,), {}),
        layer_norm_fn=None, rms_norm_fn=None,
    )  # fmt: skip
    _module("ops", selective_scan_interface=scan, triton=triton)
    for name in ("causal_conv1d", "causal_conv1d_cuda", "selective_scan_cuda"):
        _module(name, causal_conv1d_fn=None, causal_conv1d_update=None)
    try:
        import transformers.generation  # noqa: F401
    except ImportError:  # Mamba3D's vendored mamba-ssm imports names it never uses here
        generation = _module("transformers.generation", GreedySearchDecoderOnlyOutput=None,
                             SampleDecoderOnlyOutput=None, TextStreamer=None)  # fmt: skip
        hub = _module("transformers.utils.hub", cached_file=None)
        utils = _module("transformers.utils", WEIGHTS_NAME="", CONFIG_NAME="", hub=hub)
        _module("transformers", generation=generation, utils=utils)
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        from map3d.layers import DropPath

        layers = _module("timm.models.layers", DropPath=DropPath,
                         trunc_normal_=torch.nn.init.trunc_normal_, PatchEmbed=None)  # fmt: skip
        vit = _module("timm.models.vision_transformer", VisionTransformer=None, _cfg=None,
                      _load_weights=None)  # fmt: skip
        registry = _module("timm.models.registry", register_model=lambda f: f)
        models = _module("timm.models", layers=layers, vision_transformer=vit, registry=registry)
        _module("timm", models=models)


# ----------------------------------------------------------------------------- release models


class Config(dict):
    """The attribute access of the releases' EasyDict configs."""

    __getattr__ = dict.__getitem__


ENCODER = {"trans_dim": 384, "depth": 12, "drop_path_rate": 0.1, "num_heads": 6,
           "encoder_dims": 384, "group_size": 32}  # fmt: skip
MAMBA = {"center_local_k": 4, "ordering": False, "bimamba_type": "v4"}
CLASSIFIER = {**ENCODER, "cls_dim": 40, "num_group": 128, "label_smooth": 0.0,
              "lr_ratio_cls": 1.0, "lr_ratio_lfa": 1.0}  # fmt: skip


def _package(name: str, folder: Path) -> None:
    """A namespace for `folder` without running its __init__ (which imports every model)."""
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def release_models(release: str, root: Path, mamba3d_root: Path | None):
    """(classifier, pretrainer or None) built from the release's own code."""
    if release == "pointmae":
        sys.path.insert(0, str(root))
        _package("models", root / "models")
        code = _load("models.Point_MAE", root / "models" / "Point_MAE.py")
        pre = {"transformer_config": Config(ENCODER, mask_ratio=0.6, mask_type="rand",
                                            decoder_depth=4, decoder_num_heads=6),
               "group_size": 32, "num_group": 64, "loss": "cdl2"}  # fmt: skip
        return code.PointTransformer(Config(CLASSIFIER)), code.Point_MAE(Config(pre))
    root_m = mamba3d_root if release == "pointmap" else root
    sys.path.insert(0, str(root_m))
    _package("models", root_m / "models")
    if release == "mamba3d":
        code = _load("models.Mamba3D", root_m / "models" / "Mamba3D.py")
        return code.Mamba3D(Config(CLASSIFIER, **MAMBA)), None
    build = _load("models.build_fn", root_m / "models" / "build_fn.py")
    sys.modules["models.build"] = build
    register = build.MODELS.register_module  # both PointMAP files register a Point_MAE
    build.MODELS.register_module = lambda name=None, force=False, module=None: register(
        name=name, force=True, module=module
    )
    _load("models.pointtransformer", root / "PointMAP" / "point_transformer.py")
    code = _load("models.Mamba3D", root / "PointMAP" / "Mamba3D.py")
    pre = Config(ENCODER, **MAMBA, num_group=64, loss="cdl2", mask_ratio=0.6, mask_type="rand")
    return code.Mamba3D(Config(CLASSIFIER, **MAMBA)), code.Point_MAE(pre)


def perturb_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every tensor of the state dict moved off its initialization, variances kept positive."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))


# ----------------------------------------------------------------------------- comparison


def _map3d_model(state: dict, folder: Path, name: str, num_groups: int):
    path = folder / f"{name}.pth"
    torch.save({"base_model": state}, path)
    ckpt = load_checkpoint(path)
    model = map3d.create_model(
        ckpt["model_name"], task=ckpt["task"], **ckpt["model_config"], num_groups=num_groups
    )
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval(), ckpt["release"]


def _clouds() -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED)
    points = torch.randn(BATCH, POINTS, 3, generator=gen)
    return points / points.norm(dim=-1).amax(dim=1, keepdim=True)[..., None]


def compare(release: str, root: Path, mamba3d_root: Path | None) -> dict:
    install_stubs()
    torch.manual_seed(SEED)
    classifier, pretrainer = release_models(release, root, mamba3d_root)
    gen = torch.Generator().manual_seed(SEED)
    points = _clouds()
    row = {"release": release}
    with tempfile.TemporaryDirectory() as folder:
        perturb_(classifier, gen)
        classifier.eval()
        ours, detected = _map3d_model(classifier.state_dict(), Path(folder), "cls", 128)
        row["detected"] = detected
        captured = {}
        classifier.norm.register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
        with torch.no_grad():
            logits = classifier(points)
            row["features"] = (captured["h"] - ours.features(points)).abs().max().item()
            row["logits"] = (logits - ours(points)).abs().max().item()
        if pretrainer is None:
            return row
        perturb_(pretrainer, gen)
        pretrainer.eval()
        ours, _ = _map3d_model(pretrainer.state_dict(), Path(folder), "pre", 64)
        row["loss_value"], row["loss"] = _loss_difference(pretrainer, ours, points)
    return row


def _loss_difference(release_model, ours, points: torch.Tensor) -> tuple[float, float]:
    """(release loss, |difference|): both pretrainers with the same random mask (the releases
    draw it with numpy)."""
    from map3d.models import pretrainer

    rng = np.random.default_rng(SEED)
    num_groups, num_masked = 64, int(0.6 * 64)
    mask = torch.zeros(points.shape[0], num_groups, dtype=torch.bool)
    for row in mask:
        row[torch.from_numpy(rng.permutation(num_groups)[:num_masked])] = True
    encoder = release_model.MAE_encoder
    encoder._mask_center_rand = lambda center, noaug=False: mask
    pretrainer.random_masking = lambda *args, **kwargs: mask
    with torch.no_grad():
        theirs = release_model(points)
        mine = ours(points).loss
    return theirs.item(), (theirs - mine).abs().item()


# ----------------------------------------------------------------------------- command line


def _table(rows: list[dict]) -> str:
    lines = ["| release | detected as | features | logits | pretraining loss |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['release']} | failed: {row['error']} | | | |")
            continue
        loss = "n/a (no release pretraining model)"
        if "loss" in row:
            loss = f"{row['loss']:.2e} (loss {row['loss_value']:.4f})"
        lines.append(f"| {row['release']} | {row['detected']} | {row['features']:.2e} | "
                     f"{row['logits']:.2e} | {loss} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pointmae", type=Path, help="checkout of github Pang-Yatian/Point-MAE")
    parser.add_argument("--mamba3d", type=Path, help="checkout of github xhanxu/Mamba3D")
    parser.add_argument("--pointmap", type=Path, help="checkout of github yunzeliu/MAP")
    parser.add_argument(
        "--only", choices=("pointmae", "mamba3d", "pointmap"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)
    if args.only:
        root = getattr(args, args.only)
        print(json.dumps(compare(args.only, root, args.mamba3d)))
        return 0
    rows = []
    for release in ("pointmae", "mamba3d", "pointmap"):
        if getattr(args, release) is None or (release == "pointmap" and args.mamba3d is None):
            continue
        command = [sys.executable, __file__, "--only", release]
        for flag in ("pointmae", "mamba3d", "pointmap"):
            if getattr(args, flag) is not None:
                command += [f"--{flag}", str(getattr(args, flag))]
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode:
            error = (done.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"release": release, "error": error})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not rows:
        parser.error("give at least one of --pointmae, --mamba3d, --pointmap (with --mamba3d)")
    print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`map3d viz`: reconstruct shapes with a pretrained MAP model and write figures and exports.

Per shape: `<name>.ply` (layers with colours and a `layer` property, see `map3d.viz.layers`) and
`<name>.png` (input with masked patches greyed | reconstruction | ground truth), plus one
`chamfer.csv` for all shapes. The data defaults to the checkpoint's own test split; `--file`
reconstructs your own shape files instead (any format `shape_folder` reads).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

from map3d.atomic import atomic_write
from map3d.command import Command
from map3d.errors import OptionError

log = logging.getLogger(__name__)

CSV_NAME = "chamfer.csv"
FIGURE_POINTS = 2048  # default points per drawn cloud
CSV_COLUMNS = ("index", "label", "chamfer", "num_masked", "num_groups", "png", "ply")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a `map3d pretrain` checkpoint (.pt)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset name (see map3d.data.list_datasets); None = the checkpoint's dataset",
    )
    parser.add_argument(
        "--data", default=None, metavar="ROOT", help="the dataset's top folder (file datasets)"
    )
    parser.add_argument(
        "--split", default=None, help="dataset split; None = the checkpoint's test split"
    )
    parser.add_argument(
        "--index", type=int, nargs="+", default=[0, 1, 2, 3], help="dataset item indices"
    )
    parser.add_argument(
        "--file",
        nargs="+",
        default=None,
        metavar="PATH",
        help="reconstruct these shape files (.ply .obj .off .stl .pcd .xyz .txt .npy .npz; "
        "meshes are sampled on their surface) instead of dataset items",
    )
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument(
        "--renderer",
        choices=("auto", "open3d", "matplotlib"),
        default="auto",
        help="PNG renderer; auto = Open3D offscreen when available, else matplotlib",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="also open an interactive Open3D window per shape (needs a display; "
        "SPACE switches input / reconstruction / ground truth)",
    )
    parser.add_argument(
        "--num-points",
        type=int,
        default=FIGURE_POINTS,
        metavar="N",
        help="points per drawn cloud: each shape is sampled with N points (at most what the "
        "dataset holds) and cut into proportionally more patches of the checkpoint's patch "
        "size, so reconstructions are drawn as densely as N; 0 = the cloud size the model was "
        "trained on",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masking")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: OMP_NUM_THREADS if set, else the cores this process "
        "may use)",
    )
    parser.add_argument(
        "--size", type=int, nargs=2, default=[480, 480], metavar=("W", "H"), help="pixels per view"
    )


def load_pretrainer(path: str | Path, device, **overrides):
    """Rebuild the MAP pretrainer saved in a `map3d pretrain` checkpoint, in eval mode, with
    model config `overrides` that leave the weights' shapes alone (e.g. num_groups).

    Returns (model, checkpoint dict). Raises ValueError for checkpoints of other tasks.
    """
    from map3d.engine.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu")
    model_task = ckpt.get("model_task", ckpt.get("task"))
    if model_task != "pretrain":
        raise OptionError(
            f"{path}: `map3d viz` needs a pretraining checkpoint, this one is for task "
            f"{ckpt.get('task')!r}"
        )
    return model_from_checkpoint(ckpt, path, **overrides).to(device), ckpt


def figure_groups(groups: int, regions: int | None, train_points: int, points: int) -> int:
    """Patches for a `points`-point figure from a model trained with `groups` patches (and
    `regions` decoder regions) on `train_points` points: the training ratio of patches to
    points, a multiple of the regions, so that the patches keep their K points and the
    reconstruction covers the cloud as in training."""
    regions = regions or 1
    scaled = round(groups * points / train_points / regions) * regions
    return max(regions, min(scaled, points // regions * regions))


def build_viz_dataset(
    ckpt: dict, dataset: str | None, root: str | None, split: str | None, num_points: int = 0
):
    """The dataset to draw from: the checkpoint's (same options, test split) unless overridden.

    Returns (dataset, name, split, npoints): npoints is the cloud size the model was trained
    on, None if unknown. The built-in synthetic shapes are generated with at least
    `num_points` points.
    """
    from map3d.data import build_dataset

    data = (ckpt.get("config") or {}).get("data") or {}
    same = dataset is None or dataset == data.get("name")
    name = dataset or data.get("name") or "synthetic"
    options = dict(data.get("options") or {}) if same else {}
    if name == "synthetic":
        options.setdefault("task", "pretrain")
        options["num_points"] = max(num_points, options.get("num_points", 0)) or 1024
    if root is None and same:
        root = data.get("root")
    split = split or data.get("test_split") or "test"
    return build_dataset(name, split=split, root=root, **options), name, split, data.get("npoints")


def file_items(files: list[str], ckpt: dict, seed: int) -> list[tuple[int, str, dict]]:
    """(index, output stem, item) per shape file: `points_per_shape` points of the checkpoint's
    data options (else 8,192; meshes sampled on their surface), unit-sphere normalized."""
    import torch

    from map3d.data.base import pc_normalize
    from map3d.data.shapes import read_points

    options = ((ckpt.get("config") or {}).get("data") or {}).get("options") or {}
    count = int(options.get("points_per_shape", 8192))
    items = []
    for i, path in enumerate(files):
        points = pc_normalize(read_points(path, count, seed=seed), path)
        items.append((i, Path(path).stem, {"points": torch.from_numpy(points)}))
    return items


def run(args: argparse.Namespace) -> int:
    from map3d.viz.interactive import require_display

    if args.show:
        require_display()  # before any work
    rows = visualize(args)
    return 0 if rows else 1


def visualize(args: argparse.Namespace) -> list[dict]:
    """Reconstruct, export and render every requested shape; returns the CSV rows."""
    import torch

    from map3d.engine.batching import fps_points
    from map3d.engine.distributed import DistInfo
    from map3d.engine.monitor import Progress, echo
    from map3d.engine.runs import setup_logging
    from map3d.engine.setup import derive_seed, resolve_device
    from map3d.engine.threads import configure_threads, threads_note
    from map3d.viz.layers import split_reconstruction
    from map3d.viz.render import render_reconstruction, resolve_renderer

    setup_logging(None, DistInfo())
    configure_threads(args.threads)
    device = resolve_device(args.device)
    model, ckpt = load_pretrainer(args.checkpoint, device)
    renderer = resolve_renderer(args.renderer)
    if args.file:
        items = file_items(args.file, ckpt, args.seed)
        name, split = "files", "given"
        npoints = ((ckpt.get("config") or {}).get("data") or {}).get("npoints")
    else:
        dataset, name, split, npoints = build_viz_dataset(
            ckpt, args.dataset, args.data, args.split, num_points=args.num_points
        )
        bad = [i for i in args.index if not 0 <= i < len(dataset)]
        if bad:
            raise OptionError(
                f"--index {bad} out of range for {name}/{split} ({len(dataset)} items)"
            )
        if "image" in dataset[args.index[0]]:  # image pretrainers: one grid of the items
            from map3d.viz.images import visualize_images

            return visualize_images(args, model, dataset, name, split, device)
        items = [(i, f"{name}-{split}-{i:05d}", dataset[i]) for i in args.index]
    if any("points" not in item for _, _, item in items):
        raise OptionError(f"{name}: items have no 'points'; `map3d viz` draws point clouds")
    stored = items[0][2]["points"].shape[0]
    train_points = npoints or stored
    drawn = min(args.num_points or train_points, stored)
    trained_groups = model.config.num_groups
    groups = figure_groups(trained_groups, model.config.num_regions, train_points, drawn)
    if groups != trained_groups:  # the same weights, cut into more patches
        from map3d.engine.checkpoint import model_from_checkpoint

        model = model_from_checkpoint(ckpt, args.checkpoint, num_groups=groups).to(device)
    log.info(
        "figures: %d points per shape in %d patches of %d (trained on %d points, %d patches) | %s",
        drawn,
        groups,
        model.config.group_size,
        train_points,
        trained_groups,
        threads_note(),
    )
    norm = getattr(getattr(model, "config", None), "chamfer_norm", None)
    variant = {1: "cdl1, Euclidean", 2: "cdl2, squared L2"}.get(norm, "model loss")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{name}/{split}, {renderer} renderer, Chamfer distance ({variant}) of masked patches:")
    print(f"{'index':>7} {'chamfer':>10} {'masked':>8}  figure")

    rows, shapes = [], []
    for index, stem, item in Progress(items, desc="viz", unit="shape"):
        points = item["points"].to(device=device, dtype=torch.float32).unsqueeze(0)
        if points.shape[1] > drawn:
            points = fps_points(points, drawn)
        generator = torch.Generator(device).manual_seed(derive_seed(args.seed, index))
        with torch.no_grad():
            shape = split_reconstruction(model.reconstruct(points, generator=generator))[0]
        ply = shape.write_ply(out / f"{stem}.ply")
        png = render_reconstruction(
            shape, out / f"{stem}.png", renderer=renderer, panel_size=tuple(args.size)
        )
        shapes.append(shape)
        label = item.get("label")
        rows.append(
            {
                "index": index,
                "label": "" if label is None else int(label),
                "chamfer": f"{shape.chamfer:.6g}",
                "num_masked": shape.num_masked,
                "num_groups": shape.num_groups,
                "png": png.name,
                "ply": ply.name,
            }
        )
        masked = f"{shape.num_masked}/{shape.num_groups}"
        echo(f"{index:>7} {shape.chamfer:>10.5f} {masked:>8}  {png}")
    with atomic_write(out / CSV_NAME, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} PNG + PLY pairs and {out / CSV_NAME}")

    if args.show:
        from map3d.viz.interactive import show_reconstruction

        for row, shape in zip(rows, shapes):
            log.info("showing %s item %d (close the window for the next one)", name, row["index"])
            show_reconstruction(shape, title=row["png"])
    return rows


VIZ = Command(
    help="reconstruct shapes with a pretrained model: PNG figures, PLY files, Chamfer CSV",
    add_arguments=add_arguments,
    run=run,
    description=(
        "Reconstruct dataset shapes with a pretrained MAP checkpoint (one seeded random masking "
        "per shape). Writes per shape NAME.png (input with masked patches grey | reconstruction "
        "| ground truth) and NAME.ply (layer property: 0 visible, 1 reconstructed masked, "
        "2 ground-truth masked), and chamfer.csv with the per-shape Chamfer distance. "
        "Data: the checkpoint's dataset and test split unless --dataset/--data/--split say "
        "otherwise."
    ),
)

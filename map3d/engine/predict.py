"""`map3d predict`: run a finetuned checkpoint on your own shape files.

Inputs are files and folders (searched recursively) in any format `shape_folder` reads
(`map3d.data.shapes`). Each file becomes `points_per_shape` points (the checkpoint's
`data.options.points_per_shape`, else 8,192; meshes sampled on their surface, seeded by
`--seed`), unit-sphere normalized, then goes through the checkpoint's evaluation pipeline:

- classification: FPS to `data.npoints`, softmax of the logits; with `--votes V`, the logits of
  V random `data.npoints` subsets of the FPS `point_all` pool with `data.vote_augment` are
  averaged first (as `map3d eval`). One row per file: class and probability.
- part segmentation: FPS to `data.npoints`, per-point part = argmax over the parts of the
  shape's category (`--category`, else the name of the file's folder); each file is written as
  a PLY coloured by part, with an integer `part` property.

Rows are printed as a table and written with `--csv` / `--json`. Bad files stop the run with
an error naming the file, or with `--skip-bad` are reported on stderr and left out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from map3d.atomic import atomic_write, write_json
from map3d.command import Command
from map3d.errors import OptionError

TASKS = ("classify", "partseg")
DEFAULT_POINTS = 8192


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="FILE_OR_FOLDER",
        help="shape files and/or folders (searched recursively)",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="classification or part-segmentation checkpoint, or its run directory",
    )
    p.add_argument("--csv", metavar="PATH", help="also write the rows as CSV")
    p.add_argument("--json", metavar="PATH", help="also write the rows (and settings) as JSON")
    p.add_argument(
        "--out",
        metavar="DIR",
        default="predictions",
        help="part segmentation: folder for the coloured PLY files",
    )
    p.add_argument(
        "--votes",
        type=int,
        default=0,
        help="classification: average the logits of this many augmented subsets",
    )
    p.add_argument(
        "--category",
        metavar="NAME|INDEX",
        help="part segmentation: the shapes' category (default: each file's folder)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="files per forward pass")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1")
    p.add_argument("--seed", type=int, default=0, help="seed of surface sampling and votes")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="report unreadable or damaged files and go on without them",
    )


def collect_files(inputs: list[str]) -> list[Path]:
    """Shape files named by `inputs` (files as given, folders searched recursively)."""
    from map3d.data.shape_folder import find_shapes
    from map3d.data.shapes import SHAPE_EXTENSIONS, is_shape_file

    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = find_shapes(path)
            if not found:
                raise FileNotFoundError(f"{path}: no shape files ({' '.join(SHAPE_EXTENSIONS)})")
            files += found
        elif path.is_file():
            if not is_shape_file(path):
                raise OptionError(
                    f"{path}: unsupported format; expected one of {' '.join(SHAPE_EXTENSIONS)}"
                )
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


class ShapeFiles:
    """Map-style dataset over files: {"index", "points" (P,3) float32 tensor or None, "error"}.

    A bad file gives its one-line error instead of points, so the caller decides what to do.
    """

    def __init__(self, files: list[Path], num_points: int, seed: int):
        self.files, self.num_points, self.seed = files, num_points, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from map3d.data.base import pc_normalize
        from map3d.data.errors import DatasetFormatError
        from map3d.data.shapes import read_points

        path = self.files[index]
        try:
            points = pc_normalize(read_points(path, self.num_points, seed=self.seed), path)
        except DatasetFormatError as error:
            return {"index": index, "points": None, "error": str(error)}
        return {"index": index, "points": torch.from_numpy(points), "error": None}


def as_list(items: list) -> list:
    """Collate function that keeps the items as they are."""
    return items


def load_model(path: str | Path, device) -> tuple[Any, dict]:
    """The model of a classification / part-segmentation checkpoint, in eval mode on `device`."""
    from map3d.engine.checkpoint import load_checkpoint, model_from_checkpoint, run_checkpoint

    path = run_checkpoint(path)
    ckpt = load_checkpoint(path)
    if ckpt.get("model_task") not in TASKS:
        raise OptionError(
            f"{path}: `map3d predict` needs a classification or part-segmentation checkpoint, "
            f"this one is for task {ckpt.get('task')!r}"
        )
    return model_from_checkpoint(ckpt, path).to(device), ckpt


def _category_table(ckpt: dict) -> tuple[list[str], list[list[int]]]:
    from map3d.data.shapenetpart import CATEGORY_NAMES, CATEGORY_PARTS

    info = ckpt.get("data_info") or {}
    names = list(info.get("category_names") or CATEGORY_NAMES)
    parts = [list(p) for p in info.get("category_parts") or CATEGORY_PARTS]
    return names, parts


def _category_of(path: Path, requested: str | None, names: list[str]) -> int:
    lower = [n.lower() for n in names]
    key = requested if requested is not None else path.parent.name
    if key.isdigit() and int(key) < len(names):
        return int(key)
    if key.lower() in lower:
        return lower.index(key.lower())
    where = "--category" if requested is not None else f"{path}: folder name {key!r}"
    raise OptionError(
        f"{where} is not a part-segmentation category; pass --category, one of {', '.join(names)}"
    )


def predict(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Run the checkpoint over the inputs; returns (rows, settings)."""
    import torch
    from tqdm import tqdm

    from map3d.data.errors import DatasetFormatError
    from map3d.engine.batching import apply_augments, fps_points, shared_subset
    from map3d.engine.config import config_from_dict
    from map3d.engine.inputs import PointInputs
    from map3d.engine.metrics import vote_logits
    from map3d.engine.setup import resolve_device

    if args.batch_size < 1 or args.votes < 0:
        raise OptionError("--batch-size must be >= 1 and --votes >= 0")
    device = resolve_device(args.device)
    files = collect_files(args.inputs)
    model, ckpt = load_model(args.checkpoint, device)
    cfg = config_from_dict(ckpt["config"])
    task = ckpt["model_task"]
    num_points = int(cfg.data.options.get("points_per_shape", DEFAULT_POINTS))
    npoints = min(cfg.data.npoints, num_points)
    class_names = (ckpt.get("data_info") or {}).get("class_names")
    if task == "partseg":
        categories, category_parts = _category_table(ckpt)
        wanted = [_category_of(f, args.category, categories) for f in files]
    loader = torch.utils.data.DataLoader(
        ShapeFiles(files, num_points, args.seed),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=as_list,
    )
    generator = torch.Generator(device).manual_seed(args.seed)
    rows: list[dict] = []
    for items in tqdm(loader, desc="predict", unit="batch", disable=None, file=sys.stderr):
        good = []
        for item in items:
            if item["error"] is None:
                good.append(item)
            elif args.skip_bad:
                print(f"map3d predict: skipped {item['error']}", file=sys.stderr)
            else:
                raise DatasetFormatError(item["error"])
        if not good:
            continue
        x = torch.stack([item["points"] for item in good]).to(device)
        paths = [files[item["index"]] for item in good]
        with torch.no_grad():
            if task == "classify":
                logits = model(fps_points(x, npoints))
                if args.votes:
                    pool = fps_points(x, PointInputs.point_all(cfg, num_points))
                    logits = vote_logits(
                        [
                            model(
                                apply_augments(
                                    shared_subset(pool, npoints, generator),
                                    cfg.data.vote_augment,
                                    generator,
                                )
                            )
                            for _ in range(args.votes)
                        ]
                    )
                rows += _class_rows(paths, logits.float().softmax(-1), class_names)
            else:
                points = fps_points(x, npoints)
                category = torch.tensor([wanted[item["index"]] for item in good], device=device)
                logits = model(points, category).float()
                rows += _part_rows(
                    paths, points, logits, category, categories, category_parts, Path(args.out)
                )
    settings = {
        "checkpoint": str(args.checkpoint),
        "task": task,
        "points_per_file": num_points,
        "npoints": npoints,
        "votes": args.votes if task == "classify" else 0,
        "vote_augment": list(cfg.data.vote_augment),
        "seed": args.seed,
    }
    return rows, settings


def _class_rows(paths, probs, class_names) -> list[dict]:
    best, index = probs.max(-1)
    rows = []
    for path, p, i in zip(paths, best.tolist(), index.tolist()):
        name = class_names[i] if class_names and i < len(class_names) else str(i)
        rows.append({"file": str(path), "class": name, "class_index": i, "probability": p})
    return rows


def _part_rows(paths, points, logits, category, names, category_parts, out: Path) -> list[dict]:
    """Per-point parts restricted to each shape's category; writes one coloured PLY per file."""
    import torch

    from map3d.viz.ply import write_ply
    from map3d.viz.render import PART_PALETTE

    rows = []
    for b, path in enumerate(paths):
        parts = torch.tensor(category_parts[int(category[b])], device=logits.device)
        pred = parts[logits[b][:, parts].argmax(-1)].cpu().numpy()
        ply = out / f"{path.stem}.parts.ply"
        write_ply(
            ply,
            points[b].cpu().numpy(),
            colors=PART_PALETTE[pred % len(PART_PALETTE)],
            extra={"part": pred},
        )
        counts = {int(k): int((pred == k).sum()) for k in sorted(set(pred.tolist()))}
        rows.append(
            {
                "file": str(path),
                "category": names[int(category[b])],
                "parts": " ".join(f"{k}:{v}" for k, v in counts.items()),
                "ply": str(ply),
            }
        )
    return rows


def print_table(rows: list[dict], task: str) -> None:
    """Aligned table of the rows on stdout."""
    columns = (
        ("file", "class", "probability")
        if task == "classify"
        else ("file", "category", "parts", "ply")
    )
    shown = [
        [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows
    ]
    widths = [max([len(c)] + [len(s[i]) for s in shown]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for s in shown:
        print("  ".join(v.ljust(w) for v, w in zip(s, widths)).rstrip())


def run(args: argparse.Namespace) -> int:
    rows, settings = predict(args)  # refusals end in map3d's main as one line, exit 2
    print_table(rows, settings["task"])
    if args.csv and rows:
        with atomic_write(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        write_json(args.json, {**settings, "predictions": rows})
    written = [p for p in (args.csv, args.json) if p]
    print(f"{len(rows)} file(s) predicted" + (f"; wrote {', '.join(written)}" if written else ""))
    return 0 if rows else 1


PREDICT = Command(
    help="classify your own shape files (or label their points) with a finetuned checkpoint",
    add_arguments=add_arguments,
    run=run,
    description=(
        "Runs a classification or part-segmentation checkpoint on shape files and folders "
        "(.ply .obj .off .stl .pcd .xyz .txt .npy .npz; meshes are sampled on their surface). "
        "Classification: class and probability per file (--votes averages augmented passes). "
        "Part segmentation: per-point parts written as coloured PLY files under --out. "
        "Rows are printed and written with --csv / --json."
    ),
)

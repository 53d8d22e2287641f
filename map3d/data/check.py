"""Check a downloaded dataset: `python -m map3d.data.check ROOT --dataset NAME`.

Builds every split (and variant / few-shot setting) of the dataset, reads every item, and
reports the item counts against the published ones together with every problem found (file and
line/key), instead of stopping at the first. Exit status 0 when everything matches.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from map3d.data.errors import DatasetFormatError
from map3d.data.modelnet import find_fewshot_split
from map3d.data.registry import build_dataset
from map3d.engine.monitor import Progress

# Published sizes (see data/README.md).
EXPECTED = {
    "shapenet55": {("train", ()): 41952, ("test", ()): 10518},
    "modelnet40": {
        ("train", (("num_category", 40),)): 9843,
        ("test", (("num_category", 40),)): 2468,
        ("train", (("num_category", 10),)): 3991,
        ("test", (("num_category", 10),)): 908,
    },
    "scanobjectnn": {
        (split, (("variant", variant),)): count
        for variant, sizes in {
            "obj_bg": (2309, 581),
            "obj_only": (2309, 581),
            "pb_t50_rs": (11416, 2882),
        }.items()
        for split, count in zip(("train", "test"), sizes)
    },
    "shapenetpart": {("trainval", ()): 12137 + 1870, ("test", ()): 2874},
    "modelnet40_fewshot": {
        (split, (("way", way), ("shot", shot), ("fold", fold))): way
        * (shot if split == "train" else 20)
        for way in (5, 10)
        for shot in (10, 20)
        for fold in range(10)
        for split in ("train", "test")
    },
}


@dataclass
class Report:
    split: str
    options: dict
    count: int | None = None
    expected: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and (self.expected is None or self.count == self.expected)


def _configurations(name: str, root: Path, use_cache: bool):
    for split, options in EXPECTED[name]:
        options = dict(options)
        if name == "modelnet40":
            prefix = f"modelnet{options['num_category']}"
            if not (root / f"{prefix}_shape_names.txt").exists():
                continue
            cache = root / f"{prefix}_{split}_8192pts_fps.dat"
            options["use_cache"] = use_cache and cache.exists()
        if name == "modelnet40_fewshot":
            folder = find_fewshot_split(root, options["way"], options["shot"])
            if folder is None or not (folder / f"{options['fold']}.pkl").exists():
                continue
        yield split, options


def check_dataset(
    name: str, root, *, limit: int | None = None, use_cache: bool = True
) -> list[Report]:
    """Build each configuration of `name` under `root`, read its items, collect problems."""
    if name not in EXPECTED:
        raise ValueError(f"check: dataset must be one of {list(EXPECTED)}, got {name!r}")
    root = Path(root)
    reports = []
    for split, options in _configurations(name, root, use_cache):
        key = (split, tuple((k, v) for k, v in options.items() if k != "use_cache"))
        report = Report(split, options, expected=EXPECTED[name].get(key))
        reports.append(report)
        try:
            dataset = build_dataset(name, split=split, root=root, **options)
        except (DatasetFormatError, OSError) as error:
            report.problems.append(str(error))
            continue
        report.count = len(dataset)
        count = len(dataset) if limit is None else min(limit, len(dataset))
        for index in Progress(range(count), desc=f"check {name} {split}", unit="item"):
            try:
                dataset.load(index, dataset.generator(index))
            except (DatasetFormatError, OSError) as error:
                report.problems.append(f"item {index}: {error}")
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m map3d.data.check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("root", help="the dataset's top folder (see data/README.md)")
    parser.add_argument("--dataset", required=True, choices=list(EXPECTED))
    parser.add_argument(
        "--limit", type=int, default=None, help="read only the first N items per split"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="ModelNet: check the .txt files, not the .dat"
    )
    args = parser.parse_args(argv)
    from map3d.engine.distributed import DistInfo
    from map3d.engine.runs import setup_logging

    setup_logging(None, DistInfo())
    reports = check_dataset(args.dataset, args.root, limit=args.limit, use_cache=not args.no_cache)
    if not reports:
        print(f"{args.dataset}: nothing found under {args.root} (see data/README.md)")
        return 1
    for report in reports:
        options = " ".join(f"{k}={v}" for k, v in report.options.items())
        expected = "" if report.expected is None else f" (expected {report.expected})"
        status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        if report.expected is not None and report.count != report.expected:
            status += ", count differs"
        print(f"{args.dataset} {report.split} {options}: {report.count} items{expected} {status}")
        for problem in report.problems[:20]:
            print(f"  - {problem}")
        if len(report.problems) > 20:
            print(f"  ... and {len(report.problems) - 20} more")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

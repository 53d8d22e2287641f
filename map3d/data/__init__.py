"""Point-cloud datasets in the community's on-disk layouts, your own shape folders, a built-in
synthetic set, transforms.

Entry points: `build_dataset(name, *, split, root=None, **options)` and
`build_transforms(names)`. Items are dicts with `points` float32 (N,3) tensors; see
`map3d.data.base` for the seeding and bad-sample rules every dataset follows.
"""

from map3d.data.base import PointDataset, item_generator, pc_normalize
from map3d.data.errors import DatasetFormatError, UnsafePickleError
from map3d.data.modelnet import ModelNet40, ModelNet40FewShot
from map3d.data.registry import build_dataset, dataset_class, list_datasets
from map3d.data.scanobjectnn import ScanObjectNN
from map3d.data.shape_folder import ShapeFolder
from map3d.data.shapenet55 import ShapeNet55
from map3d.data.shapenetpart import ShapeNetPart
from map3d.data.synthetic import SyntheticShapes
from map3d.data.transforms import build_transforms

__all__ = [
    "DatasetFormatError",
    "ModelNet40",
    "ModelNet40FewShot",
    "PointDataset",
    "ScanObjectNN",
    "ShapeFolder",
    "ShapeNet55",
    "ShapeNetPart",
    "SyntheticShapes",
    "UnsafePickleError",
    "build_dataset",
    "build_transforms",
    "dataset_class",
    "item_generator",
    "list_datasets",
    "pc_normalize",
]

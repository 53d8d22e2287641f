"""The training sampler: one iteration through several epochs, with epoch-tagged indices."""

import itertools
import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from map3d.data.base import EpochIndex
from map3d.data.registry import build_dataset
from map3d.engine.batching import rotate_y
from map3d.engine.setup import EpochBatchSampler


def _epochs_one_by_one(sampler, first, start, count):
    batches = []
    for epoch in range(first, first + count):
        sampler.set_epoch(epoch, start if epoch == first else 0)
        batches += list(sampler)
    return batches


def test_several_epochs_in_one_iteration_equal_the_epochs_one_by_one():
    sampler = EpochBatchSampler(10, 4, shuffle=True, drop_last=True, seed=5)
    assert sampler.batches_per_epoch == 2
    expected = _epochs_one_by_one(sampler, 1, 1, 3)
    sampler.set_epoch(1, 1, epochs=3)
    assert len(sampler) == 5
    batches = list(sampler)
    assert batches == expected and len(batches) == 5
    assert [{i.epoch for i in b} for b in batches] == [{1}, {2}, {2}, {3}, {3}]
    assert all(type(i) is EpochIndex for b in batches for i in b)
    assert batches[1] != batches[3]  # each epoch its own order
    with pytest.raises(ValueError, match="epochs"):
        sampler.set_epoch(0, epochs=0)


def test_an_epoch_index_is_an_int_that_keeps_its_epoch_through_pickling():
    index = EpochIndex(7, epoch=3)
    assert index == 7 and [0, 1, 2, 3, 4, 5, 6, 7][index] == 7
    copy = pickle.loads(pickle.dumps(index))
    assert (int(copy), copy.epoch) == (7, 3)


def _rotate_item(sample, generator):
    return {**sample, "points": rotate_y(sample["points"][None], generator)[0]}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_draw_each_epochs_randomness_without_restarting():
    """Loader workers copy the dataset once; the indices tell them the epoch of each item."""
    ds = build_dataset(
        "synthetic", split="train", num_samples=8, num_points=64, transforms=_rotate_item
    )
    sampler = EpochBatchSampler(len(ds), 4, shuffle=False, drop_last=True, seed=1)
    sampler.set_epoch(0, epochs=3)
    parallel = [b["points"] for b in DataLoader(ds, batch_sampler=sampler, num_workers=2)]
    serial = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        serial += [b["points"] for b in DataLoader(ds, batch_sampler=sampler)]
    assert len(parallel) == len(serial) == 6
    assert all(torch.equal(a, b) for a, b in zip(parallel, serial))
    # the same items every epoch (no shuffling), rotated afresh in each
    assert not any(torch.equal(a, b) for a, b in itertools.combinations(parallel[::2], 2))

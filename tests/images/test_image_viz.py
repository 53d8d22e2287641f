"""The 2D reconstruction grid: masked input | reconstruction | original."""

import pytest
import torch

import map3d
from map3d.viz.images import image_grid_figure, masked_images, save_reconstruction_grid


def test_masked_images_grey_out_exactly_the_masked_patches(generator):
    images = torch.rand(2, 3, 8, 12, generator=generator)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4] = True  # row 1, col 1
    out = masked_images(images, mask, 4, fill=0.5)
    assert torch.all(out[0, :, 4:8, 4:8] == 0.5)
    out[0, :, 4:8, 4:8] = images[0, :, 4:8, 4:8]
    assert torch.equal(out, images)
    with pytest.raises(ValueError, match="mask"):
        masked_images(images, mask[:, :5], 4)


def test_reconstruction_grid_png(tmp_path, generator):
    model = map3d.create_model("map_nano_patch4_16", task="pretrain").eval()
    rec = model.reconstruct(torch.rand(3, 3, 16, 16, generator=generator), generator=generator)
    path = save_reconstruction_grid(tmp_path / "grid.png", rec)
    assert path.stat().st_size > 1000
    fig = image_grid_figure(rec.images, rec.pred_images, rec.mask, 4, max_images=2)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["masked input", "reconstruction", "original"]

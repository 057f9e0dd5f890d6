"""Fusion of several runs' grids by regional residual (vqtto.search.fusion)."""

import pytest
import torch

from vqtto import search


def _block_fields(h=2, w=2, size=2):
    """``(h*w, h*size, w*size)``: position p draws its own size x size block, nothing else."""
    fields = torch.zeros(h * w, h * size, w * size, dtype=torch.bool)
    for p in range(h * w):
        r, c = divmod(p, w)
        fields[p, r * size:(r + 1) * size, c * size:(c + 1) * size] = True
    return fields


def test_each_position_takes_the_code_of_the_run_right_over_its_field():
    fields = _block_fields()
    truth = torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])  # (B=2, 2, 2)
    a, b = truth.clone(), truth.clone()
    a[0, 0, 0], a[1, 1, 1] = 9, 9  # run a is wrong at two positions ...
    b[0, 1, 0], b[1, 0, 1] = 9, 9  # ... run b at two others
    res = torch.zeros(2, 2, 4, 4)
    for run, grid in enumerate((a, b)):
        wrong = (grid != truth).flatten(1)  # (B, h*w)
        res[run] = (wrong.float() @ fields.flatten(1).float()).view(2, 4, 4)  # error exactly on the wrong blocks
    fused = search.fuse_by_region(torch.stack([a, b]), res, fields)
    assert torch.equal(fused, truth)
    assert not torch.equal(a, truth) and not torch.equal(b, truth)


def test_ties_keep_the_first_run_and_one_run_is_returned_as_it_is():
    fields = _block_fields()
    a, b = torch.randint(10, (2, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    res = torch.ones(2, 3, 4, 4)
    assert torch.equal(search.fuse_by_region(torch.stack([a, b]), res, fields), a)
    assert torch.equal(search.fuse_by_region(a[None], res[:1], fields), a)


def test_pixel_residuals_sum_squared_error_over_channels():
    imgs, tgt = torch.zeros(2, 1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert torch.equal(search.pixel_residuals(imgs, tgt), torch.full((2, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match="must share"):
        search.pixel_residuals(imgs, torch.ones(1, 1, 4, 4))


def test_fusion_refuses_shapes_that_do_not_fit():
    fields, grids, res = _block_fields(), torch.zeros(2, 3, 2, 2, dtype=torch.long), torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="grids must be"):
        search.fuse_by_region(grids.float(), res, fields)
    with pytest.raises(ValueError, match="residuals must be"):
        search.fuse_by_region(grids, res[:1], fields)
    with pytest.raises(ValueError, match="fields must be"):
        search.fuse_by_region(grids, res, fields[:3])

"""Fusion of several runs' grids, position by position, by where each run's image is right.

Two searches of the same pair often fail in different places: one gets the collar right, the other
the sleeve. :func:`fuse_by_region` builds one grid from R runs' best grids ``(R, B, h, w)``: at each
token position it takes the code of the run whose decoded image has the smallest residual over that
position's receptive field (:func:`vqtto.tasks.receptive_fields`, the pixels its code mainly draws).
The fused grid costs one decode to score. It is a guess: neighbouring codes interact in the decoder,
so the fused image can be worse than either run's, and a caller keeps the best of all.
"""

from __future__ import annotations

import torch

__all__ = ["fuse_by_region", "pixel_residuals"]


def pixel_residuals(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels: images ``(..., C, H, W)`` against targets ``(B, C, H, W)`` -> ``(..., H, W)``."""
    if images.shape[-3:] != targets.shape[-3:]:
        raise ValueError(f"images {tuple(images.shape)} and targets {tuple(targets.shape)} must share (C, H, W)")
    return ((images.float() - targets.float().to(images.device)) ** 2).sum(-3)


def fuse_by_region(grids: torch.Tensor, residuals: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """One grid per pair from ``R`` runs, each position's code from the run that is right there.

    Args:
        grids: ``(R, B, h, w)`` int64, each run's grid per pair.
        residuals: ``(R, B, H, W)`` float, each run's per-pixel error (e.g. :func:`pixel_residuals`
            of its decoded grids; zero where a pixel is not measured).
        fields: ``(h*w, H, W)`` bool, the pixels each token position draws (raster order).

    Returns:
        ``(B, h, w)`` int64: at position ``p`` the code of the run with the smallest residual summed over
        ``fields[p]`` (ties: the earlier run).
    """
    if grids.dim() != 4 or grids.dtype != torch.long:
        raise ValueError(f"grids must be (R, B, h, w) int64, got {tuple(grids.shape)} {grids.dtype}")
    r, b, h, w = grids.shape
    if residuals.dim() != 4 or residuals.shape[:2] != (r, b):
        raise ValueError(f"residuals must be ({r}, {b}, H, W), one per run and pair, got {tuple(residuals.shape)}")
    if fields.dim() != 3 or fields.shape[0] != h * w or fields.shape[1:] != residuals.shape[2:]:
        raise ValueError(f"fields must be ({h * w}, {residuals.shape[2]}, {residuals.shape[3]}) bool, one per position, "
                         f"got {tuple(fields.shape)}")
    regional = residuals.flatten(2).float() @ fields.flatten(1).float().T.to(residuals.device)  # (R, B, h*w)
    pick = regional.argmin(0)  # (B, h*w); argmin keeps the first of equal values
    return grids.flatten(2).gather(0, pick[None].to(grids.device)).view(b, h, w)

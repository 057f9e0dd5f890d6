"""Constraint losses for test-time search: images ``(B, C, H, W)`` -> per-pair losses ``(B,)``.

The paper (section 4.1) states the search for any loss between a generated image and a target;
its experiments use the mean squared error to a target image. Searches accept *any* callable that
maps a batch of images to one loss per pair; the constructors here build the three this book uses:

- :func:`mse_to` the paper's MSE to a target image,
- :func:`masked_mse_to` MSE over the known pixels only (inpainting),
- :func:`downscaled_mse_to` MSE after average-pooling by a factor (super-resolution).

They return :class:`PairLoss` objects, which can also be restricted to a subset of the pairs
(:meth:`PairLoss.rows`); the batched searches use that so that finished pairs cost nothing.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor], torch.Tensor]


class PairLoss:
    """A per-pair loss with one target (and optional mask) per pair.

    Args:
        name: short description, e.g. ``"mse"``.
        targets: ``(B, C, H', W')`` what the (transformed) images are compared with.
        transform: applied to the images before comparing (identity, downscaling...).
        mask: ``(B, 1 or C, H', W')`` weights in [0, 1] (1 = pixel counts), or None.
    """

    def __init__(self, name: str, targets: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 mask: torch.Tensor | None = None) -> None:
        if targets.dim() != 4:
            raise ValueError(f"targets must be (B, C, H, W), got shape {tuple(targets.shape)}")
        self.name = name
        self.targets = targets
        self.transform = transform
        self.mask = mask

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> ``(B,)`` losses (differentiable)."""
        x = self.transform(images) if self.transform is not None else images
        t = self.targets.to(x.device)
        if self.transform is not None and t.shape == images.shape:
            t = self.transform(t)  # full-resolution targets given: compare like with like
        if x.shape != t.shape:
            raise ValueError(f"{self.name}: images give shape {tuple(x.shape)} but targets are {tuple(t.shape)}")
        sq = (x - t).pow(2)
        if self.mask is None:
            return sq.flatten(1).mean(1)
        m = self.mask.to(x.device).expand_as(sq)
        return (sq * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-12)

    def rows(self, rows: torch.Tensor) -> "PairLoss":
        """The same loss for the pairs ``rows`` (``(n,)`` int64, repeats allowed) only."""
        rows = rows.to(self.targets.device)
        mask = None if self.mask is None else self.mask[rows.to(self.mask.device)]
        return PairLoss(self.name, self.targets[rows], self.transform, mask)

    def __repr__(self) -> str:
        return f"PairLoss({self.name}, {len(self)} pairs)"


def mse_to(targets: torch.Tensor) -> PairLoss:
    """Mean squared error to ``targets`` ``(B, C, H, W)`` in [0, 1], one loss per pair (the paper's)."""
    return PairLoss("mse", targets)


def masked_mse_to(targets: torch.Tensor, mask: torch.Tensor) -> PairLoss:
    """MSE over the pixels where ``mask`` is 1 (inpainting: only the known pixels constrain).

    Args:
        targets: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)``, ``(1, 1, H, W)`` or ``(H, W)`` weights in [0, 1]; broadcast over pairs
            and channels. At least one pixel per pair must count.
    """
    if mask.dim() == 2:
        mask = mask[None, None]
    if mask.dim() != 4:
        raise ValueError(f"mask must be (H, W) or (B, 1, H, W), got shape {tuple(mask.shape)}")
    mask = mask.float().expand(targets.shape[0], -1, -1, -1)
    if mask.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"mask is {tuple(mask.shape[-2:])} pixels but targets are {tuple(targets.shape[-2:])}")
    if bool((mask.flatten(1).sum(1) <= 0).any()):
        raise ValueError("mask must keep at least one pixel of every pair")
    return PairLoss("masked mse", targets, mask=mask)


def downscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``(B, C, H, W)`` by ``factor`` (H and W must be divisible by it)."""
    if factor < 1 or images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"factor must be >= 1 and divide the image size {tuple(images.shape[-2:])}, got {factor!r}")
    return F.avg_pool2d(images, factor)


def downscaled_mse_to(targets: torch.Tensor, factor: int) -> PairLoss:
    """MSE between the images average-pooled by ``factor`` and ``targets`` (super-resolution).

    Args:
        targets: the low-resolution images ``(B, C, H/factor, W/factor)``, or full-resolution
            ``(B, C, H, W)`` images, which are downscaled here first.
        factor: integer pooling factor >= 1.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    return PairLoss(f"mse after /{factor} downscaling", targets, transform=lambda x: downscale(x, factor))


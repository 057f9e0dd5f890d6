"""Yardsticks for search results: the loss of given index grids, and of the target's own code.

The book measures every search against one reference, the *loss of the target's own code*:
encode the target, quantise it, decode it, score it, ``L(decode(nearest(encode(t))))``
(:func:`reference_losses`). A search's loss divided by it (:func:`relative_losses`) is 1.0 when
the search does as well as encoding the target itself.
"""

from __future__ import annotations

import torch

from .losses import LossFn, mse_to
from .driver import pair_losses

__all__ = ["quantized_losses", "reference_losses", "relative_losses"]


@torch.no_grad()
def quantized_losses(model, loss: LossFn, indices: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """``(B,)`` loss of ``decode(lookup(indices))`` for index grids ``(B, h, w)`` int64, pair i with grid i."""
    n = indices.shape[0]
    out = []
    for s in range(0, n, batch):
        rows = torch.arange(s, min(n, s + batch), device=indices.device)
        out.append(pair_losses(loss, model.decode(model.lookup(indices[rows])), rows, n))
    return torch.cat(out)


@torch.no_grad()
def reference_losses(model, targets: torch.Tensor, loss: LossFn | None = None) -> torch.Tensor:
    """``(B,)`` the loss of each target's own code: ``L(decode(nearest(encode(t))))``.

    The best a search could hope for under an MSE-to-target loss, and the book's one yardstick
    for "relative final loss" (1.0 = as good as encoding the target itself).

    Args:
        model: a VQ-VAE (``encode``, ``nearest``, ``lookup``, ``decode``).
        targets: ``(B, C, H, W)`` target images.
        loss: images ``(B, C, H, W)`` -> ``(B,)``; default ``mse_to(targets)``.
    """
    loss = loss if loss is not None else mse_to(targets)
    return quantized_losses(model, loss, model.nearest(model.encode(targets)))


def relative_losses(model, targets: torch.Tensor, losses: torch.Tensor, loss: LossFn | None = None) -> torch.Tensor:
    """``(B,)`` ``losses`` ``(B,)`` divided by :func:`reference_losses` of the same targets (and loss)."""
    return losses / reference_losses(model, targets, loss).to(losses.device)

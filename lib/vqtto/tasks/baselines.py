"""Answers to a task that need no search: the yardsticks a search must beat.

- :func:`encoder_grids`: the VQ-VAE's encoder applied to what the user has (the masked image, the
  upsampled low-resolution image), ``nearest(encode(observed))``.
- :func:`nearest_training`: the training images closest to the evidence (the visible pixels, the
  downscaled image, the edited image), whose first is the nearest-neighbour answer and whose
  mean is the k-nearest-neighbour mean (:func:`neighbour_answers`): non-learned answers any
  method must beat.
- the oracle is ``nearest(encode(truth))``: :func:`encoder_grids` of the truth, which no method sees.
"""

from __future__ import annotations

import torch

from ..search.losses import downscale
from ..latent import encode_grids
from .problems import Task

__all__ = ["encoder_grids", "nearest_training", "neighbour_answers"]


encoder_grids = encode_grids  # the anchor's name for the one chunked encoder pass


def _evidence_distances(task: Task, train: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` squared distances between each task's evidence (what the user has, never the
    truth) and ``train`` ``(N, C, H, W)``."""
    t = task.observed.cpu()
    if task.kind == "inpainting":
        vis = (~task.hidden.cpu()).expand_as(t).flatten(1).float()  # (B, P): 1 where the user sees the pixel
        x = train.flatten(1)
        d = vis @ x.pow(2).T - 2 * (vis * t.flatten(1)) @ x.T + (vis * t.flatten(1).pow(2)).sum(1, keepdim=True)
        return d / vis.sum(1, keepdim=True)
    if task.kind == "super-resolution":
        low = task.loss.targets.cpu()
        return torch.cdist(low.flatten(1), downscale(train, task.factor).flatten(1)).pow(2)
    return torch.cdist(t.flatten(1), train.flatten(1)).pow(2)


@torch.no_grad()
def nearest_training(task: Task, train: torch.Tensor, n: int = 10, chunk: int = 8192) -> torch.Tensor:
    """``(B, n)`` int64 indices into ``train`` ``(N, C, H, W)`` of the ``n`` images nearest to each
    pair's evidence, nearest first (the visible pixels for inpainting, the image pooled by the
    task's factor for super-resolution, the edited image for editing)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= train.shape[0]:
        raise ValueError(f"n (neighbours) must be an integer in [1, {train.shape[0]}], got {n!r}")
    best_d, best_i = None, None
    for s in range(0, train.shape[0], chunk):
        d = _evidence_distances(task, train[s:s + chunk].float())
        i = torch.arange(s, s + d.shape[1]).expand_as(d)
        if best_d is not None:
            d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
        top = d.topk(min(n, d.shape[1]), dim=1, largest=False)
        best_d, best_i = top.values, i.gather(1, top.indices)
    return best_i


def neighbour_answers(train: torch.Tensor, neighbours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest image ``(B, C, H, W)`` and the mean of all ``neighbours`` ``(B, n)`` of each pair."""
    return train[neighbours[:, 0]].clone(), train[neighbours].mean(1)

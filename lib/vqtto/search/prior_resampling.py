"""The prior-only baseline: complete the free positions from the PixelCNN, keep the best draw.

No gradient and no decoder in the loop: for each pair, S grids are drawn position by position in
raster order, keeping the start grid's codes at the frozen positions and sampling the movable
ones from ``p(x_p | x_<p)`` (the frozen codes before ``p`` condition the draw; those after ``p``
cannot, since the PixelCNN only looks back; Esser et al. 2021 complete images the same way).
Each draw is decoded once and scored by the task loss; the best-so-far draws make the trace.
"""

from __future__ import annotations

import time

import torch

from .losses import LossFn
from .chains import PairRandom, best_paths, movable_mask, pair_seeds, repeat_loss, sample_categorical
from .driver import Evaluator, check_positive
from .trace import FORWARD, SearchTrace

__all__ = ["prior_resample"]


@torch.no_grad()
def _complete(prior, start: torch.Tensor, free: torch.Tensor, rand: PairRandom, temperature: float) -> torch.Tensor:
    """Grids ``(n, h, w)``: ``start`` with the positions where ``free`` ``(n, h*w)`` is True drawn in raster order."""
    z = start.clone()
    n, h, w = z.shape
    rows = torch.arange(n, device=z.device)
    dev = prior.embed.device
    for r in range(h):
        cols = [c for c in range(w) if bool(free[:, r * w + c].any())]
        if not cols:
            continue
        context = prior.row_context(z.to(dev), r)  # the rows above are final: one pass per row
        for c in cols:
            logits = prior.logits_in_row(z.to(dev), r, c, context).to(z.device) / temperature
            draw = sample_categorical(logits, rand.uniform(rows))
            z[:, r, c] = torch.where(free[:, r * w + c], draw, z[:, r, c])
    return z


def prior_resample(model, prior, loss: LossFn, start: torch.Tensor, *, movable: torch.Tensor | None = None,
                   samples: int = 32, temperature: float = 1.0, seed=0, batch: int = 1024) -> SearchTrace:
    """Draw ``samples`` completions of ``start`` from ``prior`` per pair; keep the best under ``loss``.

    Args:
        model: the latent decoder (``codebook``, ``lookup``, ``decode``) whose codes ``prior`` models.
        prior: an unconditional :class:`~vqtto.models.pixelcnn.GatedPixelCNN` with the model's k and grid.
        loss: a :class:`~vqtto.search.losses.PairLoss` over the B pairs.
        start: ``(B, h, w)`` int64, the codes kept at the frozen positions.
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the positions drawn (None: all: plain samples).
        samples: S draws per pair, >= 1; each costs one decoder call.
        temperature: > 0, divides the prior's logits (1: the prior itself).
        seed: an int, or one int per pair (a pair draws the same grids batched or alone).
        batch: grids completed at once.

    Returns:
        :class:`SearchTrace` ``"prior-resample"``: per pair the draws that beat all before them,
        with ``chain_indices`` ``(B, S, h, w)`` all the draws.
    """
    check_positive("samples", samples, integer=True, minimum=1)
    check_positive("temperature", temperature)
    check_positive("batch", batch, integer=True, minimum=1)
    cfg = getattr(prior, "cfg", None)
    b, h, w = start.shape
    if cfg is None or cfg.k != model.codebook.shape[0] or (cfg.height, cfg.width) != (h, w) or cfg.n_classes:
        raise ValueError(f"prior must be an unconditional PixelCNN for k={model.codebook.shape[0]} on {h}x{w} grids, "
                         f"got {cfg!r}")
    t0 = time.perf_counter()
    free = movable_mask(movable, b, h, w, start.device)
    pair_of = torch.arange(b, device=start.device).repeat_interleave(samples)
    rand = PairRandom(pair_seeds(seed, b), samples, start.device)
    ev = Evaluator(model, repeat_loss(loss, pair_of), b * samples)
    batch = max(1, batch // samples) * samples  # whole pairs per batch: a pair's draws do not depend on the batch
    grids, values = [], []
    for s in range(0, b * samples, batch):
        rows = torch.arange(s, min(s + batch, b * samples), device=start.device)
        g = _complete(prior, start[pair_of[rows]], free[pair_of[rows]], rand, float(temperature))
        grids.append(g)
        values.append(ev.losses(g[:, None], rows)[:, 0])
    grids = torch.cat(grids).view(b, samples, h, w).cpu()
    values = torch.cat(values).view(b, samples).cpu()
    elapsed = time.perf_counter() - t0
    cost = torch.arange(1, samples + 1, dtype=torch.float64) * FORWARD
    parts = [[(grids[i], values[i], cost, torch.full((samples,), elapsed, dtype=torch.float64))] for i in range(b)]
    return best_paths(parts, [False] * b, method="prior-resample", chain_indices=grids,
                      params={"samples": samples, "temperature": temperature}, decoded_images=ev.decoded,
                      decoder_equivalents=ev.equivalents, seconds=elapsed)

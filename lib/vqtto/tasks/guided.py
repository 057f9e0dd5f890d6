"""The prior-guided search that :func:`vqtto.tasks.solve` runs when it is given a prior.

:func:`guided_search` is the book's answer to a task: draw S completions of the movable positions
from the PixelCNN (:func:`~vqtto.search.prior_resample`), start C chains at the C draws of lowest
energy ``L + lambda * NLL / (h w)``, and minimise that energy from there, with the relaxed
straight-through search (:func:`~vqtto.search.relaxed_straight_through`, each chain one row of its
batch) or the annealed gradient-screened search (:func:`~vqtto.search.screened_annealing`); both
can stay within a Hamming radius of the start. The draws' decoder calls count towards the budget. With
``lambda = 0`` the same procedure is the control of the causal test: only the prior's weight in
the search differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import search
from ..search import registry
from .problems import Task

__all__ = ["GUIDED", "GuidedResult", "draw_completions", "draw_losses", "check_exemplars", "energy_term", "exemplar_draws", "guided_search",
           "start_grids"]


@dataclass
class GuidedResult:
    """What :func:`guided_search` found for B pairs.

    Attributes:
        grids: ``(B, h, w)`` int64, each pair's best grid under the energy.
        chains: ``(B, C, h, w)`` int64, the best grid of each chain (for the spread of answers).
        draws: ``(B, S, h, w)`` int64, the prior's completions (the prior-only baseline's draws).
        draw_best: ``(B, h, w)`` the draw of lowest task loss (the prior-only answer).
        equivalents: decoder-call equivalents per pair, draws included.
        seconds: wall time per pair of the batch (draws included).
        decoded_images: images decoded in all (draws included).
    """

    grids: torch.Tensor
    chains: torch.Tensor
    draws: torch.Tensor
    draw_best: torch.Tensor
    equivalents: float
    seconds: float
    decoded_images: int = 0


def _is_masked(prior) -> bool:
    from ..models.masked import MaskedTokenPrior

    return isinstance(getattr(prior, "model", prior), MaskedTokenPrior)


def energy_term(prior, weight: float, k: int, grid: tuple[int, int]):
    """``lambda`` times the prior's NLL per position, the prior term of a search's energy: the PixelCNN's
    exact NLL (:class:`~vqtto.search.GridPrior`) or the masked-token prior's pseudo-NLL
    (:class:`~vqtto.models.masked.MaskedGridPrior`). Either refuses a prior of another k or grid."""
    if _is_masked(prior):
        from ..models.masked import MaskedGridPrior

        return MaskedGridPrior(prior, weight, k, grid)
    return search.GridPrior(prior, weight, k, grid)


def draw_completions(model, prior, task: Task, start: torch.Tensor, samples: int, seed: int = 0) -> torch.Tensor:
    """``(B, S, h, w)`` completions of the task's movable positions (all, if it has none) of ``start``
    ``(B, h, w)``: in raster order from a PixelCNN (:func:`~vqtto.search.prior_resample`: it sees only
    the codes before a position), or by iterative parallel decoding from a masked-token prior
    (:func:`~vqtto.models.masked.complete`: it sees every frozen code)."""
    if _is_masked(prior):
        from ..models.masked import complete

        movable = task.movable if task.movable is not None else torch.ones_like(start, dtype=torch.bool)
        return complete(prior, start, movable.to(start.device), samples=samples, seed=seed).cpu()
    return search.prior_resample(model, prior, task.loss, start, movable=task.movable, samples=samples,
                                 seed=seed).chain_indices


def check_exemplars(task: Task, exemplars, samples: int) -> None:
    """Refuse exemplars that are not ``(N >= samples, C, H, W)`` images shaped like the task's."""
    if not isinstance(exemplars, torch.Tensor) or exemplars.dim() != 4 or exemplars.shape[1:] != task.observed.shape[1:]:
        raise ValueError(f"exemplars must be (N, {', '.join(map(str, task.observed.shape[1:]))}) images like the "
                         f"task's, got {tuple(getattr(exemplars, 'shape', ())) or type(exemplars).__name__}")
    if exemplars.shape[0] < samples:
        raise ValueError(f"exemplars must hold at least samples={samples} images, got {exemplars.shape[0]}")


def exemplar_draws(model, task: Task, start: torch.Tensor, exemplars: torch.Tensor, samples: int) -> torch.Tensor:
    """``(B, S, h, w)`` draws from the exemplars: the codes of the ``S`` images of ``exemplars``
    ``(N, C, H, W)`` (e.g. the training set) nearest to each image's evidence
    (:func:`~vqtto.tasks.baselines.nearest_training`: the visible pixels, or the image pooled by the
    task's factor), kept at the task's movable positions (all, if it has none), ``start`` ``(B, h, w)``
    elsewhere. Draws from the data's own distribution, conditioned on what the user has by
    nearness: no prior model, S encoder calls and one pass over the exemplars per image."""
    from ..latent import encode_grids
    from .baselines import nearest_training

    check_exemplars(task, exemplars, samples)
    b, (h, w) = start.shape[0], start.shape[1:]
    near = nearest_training(task, exemplars, samples)
    codes = encode_grids(model, exemplars[near.flatten()].float()).view(b, samples, h, w).cpu()
    movable = torch.ones(b, h, w, dtype=torch.bool) if task.movable is None else task.movable.cpu().expand(b, h, w)
    return torch.where(movable[:, None], codes, start.cpu()[:, None])


def draw_losses(model, task: Task, draws: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """``(B, S)`` task loss of each draw ``(B, S, h, w)`` (S decoder calls per pair, no gradient)."""
    b, s = draws.shape[:2]
    flat = draws.flatten(0, 1).to(model.codebook.device)
    rows = torch.arange(b, device=flat.device).repeat_interleave(s)
    out = []
    with torch.no_grad():
        for i in range(0, b * s, batch):
            sl = slice(i, i + batch)
            out.append(search.pair_losses(task.loss, model.decode(model.lookup(flat[sl])), rows[sl], b))
    return torch.cat(out).view(b, s).cpu()


def start_grids(draws: torch.Tensor, energy: torch.Tensor, chains: int) -> torch.Tensor:
    """``(B, chains, h, w)``: per pair the ``chains`` draws ``(B, S, h, w)`` of lowest ``energy`` ``(B, S)``."""
    if chains > draws.shape[1]:
        raise ValueError(f"chains ({chains}) must be <= samples ({draws.shape[1]}): each chain starts at its own draw")
    top = energy.topk(chains, 1, largest=False).indices
    return draws.gather(1, top[:, :, None, None].expand(-1, -1, *draws.shape[2:]))


#: The searches :func:`guided_search` can run from the draws: those that keep positions frozen and
#: take a prior (the relaxed searches one batch row per chain, the samplers as their own chains).
GUIDED = tuple(registry.supporting(movable=True, prior=True))


def guided_search(model, prior, task: Task, start: torch.Tensor, *, weight: float, method: str = "relaxed",
                  samples: int = 32, chains: int = 4, budget: float = 300, seed: int = 0,
                  draws: torch.Tensor | None = None, **settings) -> GuidedResult:
    """Prior draws, then a search of the energy ``L + weight * NLL / (h w)`` from the best C of them.

    Args:
        model: the VQ-VAE (a latent decoder).
        prior: an unconditional PixelCNN over its codes, or a masked-token prior (see :func:`energy_term`).
        task: the :class:`~vqtto.tasks.Task` (its loss, movable positions and radius are used; with a
            radius the chains start at ``start`` itself).
        start: ``(B, h, w)`` int64, the codes kept at the frozen positions (e.g. the encoder's
            answer on what the user has, or the source's code when editing).
        weight: lambda >= 0, in task loss per nat per position.
        method: one of :data:`GUIDED`.
        samples: S prior draws per pair (S decoder calls), >= chains.
        chains: C chains per pair; the budget is shared among them.
        budget: decoder-call equivalents per pair of the search after the draws.
        draws: ``(B, S, h, w)`` draws made before (shared between weights); None: drawn here.
        settings: the method's own settings (:func:`vqtto.search.registry.settings_of`), e.g.
            ``temperature`` and ``m`` of the screened annealing.
    """
    if method not in GUIDED:
        raise ValueError(f"method must be one of {list(GUIDED)}, got {method!r}")
    energy_prior = energy_term(prior, weight, model.codebook.shape[0], tuple(start.shape[1:]))
    t0 = time.perf_counter()
    if draws is None:
        if task.radius is not None:  # a draw would leave the ball: the chains start at the source itself
            draws = start.cpu()[:, None].expand(-1, samples, -1, -1).clone()
        else:
            draws = draw_completions(model, prior, task, start, samples, seed)
    losses = draw_losses(model, task, draws)
    penalty = energy_prior.penalty(draws.flatten(0, 1).to(start.device)).view(losses.shape).cpu()
    starts = start_grids(draws, losses + penalty, chains).to(start.device)
    b = start.shape[0]
    if not registry.get(method).chains:
        chain_best, spent, decoded = _relaxed_chains(model, task, starts, energy_prior, budget, method, settings)
    else:
        with torch.no_grad():
            z = model.lookup(start)
        trace = registry.run(method, model, z, task.loss, budget=budget, seed=seed, start=starts, chains=chains,
                             movable=task.movable, prior=energy_prior, radius=task.radius, **settings)
        chain_best, spent, decoded = trace.chain_indices, trace.decoder_equivalents / b, trace.decoded_images
    energy = draw_losses(model, task, chain_best) + energy_prior.penalty(
        chain_best.flatten(0, 1).to(start.device)).view(b, -1).cpu()
    drawn = 0 if task.radius is not None else draws.shape[1]
    return GuidedResult(grids=chain_best[torch.arange(b), energy.argmin(1)], chains=chain_best, draws=draws,
                        draw_best=draws[torch.arange(b), losses.argmin(1)], equivalents=drawn + spent,
                        seconds=(time.perf_counter() - t0) / b, decoded_images=decoded + drawn * b)


def _relaxed_chains(model, task: Task, starts: torch.Tensor, energy_prior, budget: float, method: str,
                    settings: dict) -> tuple[torch.Tensor, float, int]:
    """A search without chains of its own (the relaxed ones) from each chain's start ``(B, C, h, w)``,
    one batch row per chain sharing the pair's budget; returns each chain's best grid ``(B, C, h, w)``
    (CPU), the equivalents spent per pair and the images decoded."""
    b, c = starts.shape[:2]
    rows = torch.arange(b, device=starts.device).repeat_interleave(c)
    with torch.no_grad():
        z = model.lookup(starts.flatten(0, 1))
    movable = None if task.movable is None else task.movable.to(starts.device)[rows]
    trace = registry.run(method, model, z, task.loss.rows(rows), budget=budget / c,
                         prior=energy_prior if energy_prior.weight > 0 else None, movable=movable,
                         radius=task.radius, **settings)
    return trace.best_indices.view(b, c, *starts.shape[2:]).cpu(), trace.decoder_equivalents / b, trace.decoded_images

"""PULSE through a grid flow: a Gaussian on a sphere -> relaxed one-hot codes -> decoder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..progress import progress_bar
from .densities import LogSoftmaxZero
from .grid import GridSimplexFlow
from .toy import one_thread


# --- the reduction to PULSE ---------------------------------------------------------------------

@dataclass
class PulseResult:
    """A PULSE-style search through a flow, one per target image.

    Attributes:
        best_indices: ``(B, h, w)`` int64, the argmax index grid with the lowest loss seen.
        best_losses: ``(B,)`` loss of ``decode(lookup(best_indices))``.
        final_indices: ``(B, h, w)`` the argmax grid at the last step.
        start_indices: ``(B, h, w)`` the argmax grid of the starting ``z`` (a sample of the flow).
        relaxed_losses: ``(steps, B)`` loss of the decoded codebook mixture at each step.
        argmax_losses: ``(steps, B)`` loss of the decoded argmax grid at each step.
    """

    best_indices: torch.Tensor
    best_losses: torch.Tensor
    final_indices: torch.Tensor
    start_indices: torch.Tensor
    relaxed_losses: torch.Tensor
    argmax_losses: torch.Tensor


def sphere(z: torch.Tensor) -> torch.Tensor:
    """Project each ``z[b]`` onto the sphere of radius ``sqrt(numel(z[b]))`` (where Gaussians live)."""
    flat = z.reshape(z.shape[0], -1)
    radius = math.sqrt(flat.shape[1])
    return (flat * (radius / flat.norm(dim=1, keepdim=True).clamp_min(1e-12))).reshape(z.shape)


def pulse_search(
    model: nn.Module,
    flow: GridSimplexFlow,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    grid: tuple[int, int],
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    tau_schedule: tuple[float, float] | None = None,
    progress: bool = False,
) -> PulseResult:
    """Optimise Gaussian ``z`` on the sphere so that the flow's relaxed codes decode to a low loss.

    Each step: ``log y = flow(z)`` ``(B, P, k)``; codes ``= y @ codebook`` reshaped to
    ``(B, D, h, w)``; image ``= model.decode(codes)``; ``loss_fn(image)`` ``(B,)``; an Adam step on
    ``z``; then ``z`` is projected back onto the sphere of radius ``sqrt(P (k-1))``. The argmax
    grid of every step is decoded too and the best one kept (decoding a grid is cheap).

    ``tau_schedule=(start, end)`` anneals the temperature of the flow's last layer
    (:class:`LogSoftmaxZero`) geometrically from ``start`` to ``end`` over the steps. The layers
    before it model the ``tau``-free logit differences, so changing ``tau`` there keeps the same
    prior over which code wins at each position and only sharpens or softens the relaxation:
    soft early (useful gradients), nearly one-hot late (the mixture decodes like its argmax).

    The flow is left as it was found, also when the search raises: its temperature and each
    parameter's ``requires_grad`` flag are restored (the parameters are frozen during the search).
    The search runs with one CPU thread (:func:`one_thread`).

    Args:
        model: a VQ-VAE (latent-decoder protocol: ``codebook``, ``lookup``, ``decode``).
        flow: a trained :class:`GridSimplexFlow` whose ``P`` equals ``h * w`` and ``k`` the codebook's.
        loss_fn: images ``(B, C, H, W)`` -> ``(B,)`` per-image losses (e.g. :func:`vqtto.search.losses.mse_to`).
        batch: number of searches (targets), >= 1.
        grid: ``(h, w)`` of the code grid.
        steps: Adam steps on ``z``, >= 1.
        tau_schedule: ``(start, end)`` temperatures > 0, or None to keep the flow's.

    Raises:
        ValueError: for ``steps`` or ``batch`` < 1, a temperature <= 0, or a flow whose ``P`` or ``k``
            does not match the model's grid and codebook; nothing has run then.
    """
    for name, value in (("steps", steps), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (the search needs at least one step and one target), "
                             f"got {name}={value!r}")
    if tau_schedule is not None and not (len(tau_schedule) == 2 and all(t > 0 for t in tau_schedule)):
        raise ValueError(f"tau_schedule must be (start, end) with both temperatures > 0, got {tau_schedule!r}")
    h, w = grid
    codebook = model.codebook.detach()
    if flow.positions != h * w or flow.k != codebook.shape[0]:
        raise ValueError(f"flow has P={flow.positions}, k={flow.k}; model needs P={h * w}, k={codebook.shape[0]}")
    trained_tau = flow.to_simplex.tau
    flags = [p.requires_grad for p in flow.parameters()]
    try:
        for p in flow.parameters():
            p.requires_grad_(False)
        with one_thread():
            return _pulse_steps(model, flow, loss_fn, codebook, batch, grid, steps, lr, seed, tau_schedule, progress)
    finally:
        flow.to_simplex.tau = trained_tau
        for p, flag in zip(flow.parameters(), flags):
            p.requires_grad_(flag)


def _pulse_steps(model: nn.Module, flow: GridSimplexFlow, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                 codebook: torch.Tensor, batch: int, grid: tuple[int, int], steps: int, lr: float, seed: int,
                 tau_schedule: tuple[float, float] | None, progress: bool) -> PulseResult:
    """The loop of :func:`pulse_search`, on a frozen flow (the caller checks and restores)."""
    h, w = grid
    device = codebook.device
    gen = torch.Generator().manual_seed(seed)
    z = sphere(torch.randn(batch, flow.positions, flow.dim, generator=gen)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_losses = torch.full((batch,), float("inf"), device=device)
    best_idx = torch.zeros(batch, h, w, dtype=torch.long, device=device)
    relaxed_hist, argmax_hist = [], []
    for step in progress_bar(range(steps), disable=not progress, desc="PULSE through flow", leave=False):
        if tau_schedule is not None:
            start, end = tau_schedule
            flow.to_simplex.tau = start * (end / start) ** (step / max(1, steps - 1))
        log_y, _ = flow(z)
        codes = (log_y.exp() @ codebook).reshape(batch, h, w, -1).permute(0, 3, 1, 2)
        losses = loss_fn(model.decode(codes))
        with torch.no_grad():
            idx = log_y.argmax(-1).reshape(batch, h, w)
            hard = loss_fn(model.decode(model.lookup(idx)))
            better = hard < best_losses
            best_losses = torch.where(better, hard, best_losses)
            best_idx[better] = idx[better]
            if step == 0:
                start_idx = idx.clone()
        relaxed_hist.append(losses.detach().cpu())
        argmax_hist.append(hard.cpu())
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        with torch.no_grad():
            z.copy_(sphere(z))
    return PulseResult(best_idx, best_losses, idx, start_idx, torch.stack(relaxed_hist), torch.stack(argmax_hist))

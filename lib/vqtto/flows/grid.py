"""One simplex flow per position of a code grid, and the categorical it relaxes."""

from __future__ import annotations

import math

import normflows as nf
import torch
from torch import nn

from .gumbel import GumbelSoftmax
from .architectures import _check_flow_args
from .densities import LogSimplexTarget, LogSoftmaxZero
from .reverse_kl import FlowRun, reverse_kld_parts, train_reverse_kld
from .toy import one_thread


# --- one flow per code-grid position -----------------------------------------------------------

class _PositionCoupling(nn.Module):
    """Affine coupling on the last dimension, conditioned on the other half and the position."""

    def __init__(self, dim: int, embed: int, hidden: int, flip: bool) -> None:
        super().__init__()
        self.flip = flip
        self.first = dim // 2
        self.second = dim - self.first
        self.net = nf.nets.MLP([self.first + embed, hidden, hidden, 2 * self.second], init_zeros=True)

    def forward(self, z: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flip:
            z = z.flip(-1)
        z1, z2 = z[..., : self.first], z[..., self.first:]
        params = self.net(torch.cat([z1, emb.expand(*z1.shape[:-1], emb.shape[-1])], -1))
        shift, log_scale = params[..., : self.second], params[..., self.second:]
        z = torch.cat([z1, z2 * log_scale.exp() + shift], -1)
        return z, log_scale.reshape(z.shape[0], -1).sum(1)


class GridSimplexFlow(nn.Module):
    """Independent simplex flows for ``P`` positions: ``(B, P, k-1)`` Gaussian -> ``(B, P, k)`` ``log y``.

    Position ``p`` maps its own standard-normal noise through coupling layers conditioned on a
    learned embedding of ``p`` and then :class:`LogSoftmaxZero`; positions never see each other,
    so the model is a product of ``P`` flows on the simplex (with shared weights).
    """

    def __init__(self, positions: int, k: int, tau: float, n_blocks: int = 4, hidden: int = 64, embed: int = 8) -> None:
        super().__init__()
        _check_flow_args(k, n_blocks, hidden)
        self.positions, self.k, self.dim = positions, k, k - 1
        self.embedding = nn.Parameter(torch.randn(positions, embed) * 0.1)
        self.layers = nn.ModuleList(_PositionCoupling(k - 1, embed, hidden, flip=i % 2 == 1) for i in range(n_blocks))
        self.to_simplex = LogSoftmaxZero(tau)
        self.target: LogSimplexTarget | None = None

    @property
    def latent_dim(self) -> int:
        return self.positions * self.dim

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, P, k-1)`` -> (``(B, P, k)`` log-coordinates, ``(B,)`` log|det J| of the whole map)."""
        log_det = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for layer in self.layers:
            z, ld = layer(z, self.embedding)
            log_det = log_det + ld
        log_y, ld = self.to_simplex(z)
        return log_y, log_det + ld

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``(n, P, k)`` (log-coordinates) and their log density ``(n,)``."""
        z = torch.randn(n, self.positions, self.dim, device=self.embedding.device)
        log_y, log_det = self(z)
        log_base = -0.5 * (z.pow(2).sum((1, 2)) + self.latent_dim * math.log(2 * math.pi))
        return log_y, log_base - log_det

    def reverse_kld(self, num_samples: int = 1) -> torch.Tensor:
        """Reverse KL estimate to :attr:`target` (set it first), as normflows defines it."""
        if self.target is None:
            raise ValueError("set GridSimplexFlow.target (a LogSimplexTarget over (P, k)) before training")
        _, log_q, log_p, _ = reverse_kld_parts(self, num_samples)
        return log_q.mean() - log_p.mean()


def fit_code_categorical(indices: torch.Tensor, k: int, pseudocount: float = 0.5) -> torch.Tensor:
    """Per-position class frequencies of index grids, smoothed so that no class has probability 0.

    Args:
        indices: ``(N, h, w)`` int64 index grids (e.g. encoded training images).
        k: codebook size.
        pseudocount: added to every count (> 0).
    Returns:
        ``(h*w, k)`` probabilities, one row per position in raster order.
    """
    if pseudocount <= 0:
        raise ValueError(f"pseudocount must be > 0, got {pseudocount!r}")
    n, h, w = indices.shape
    flat = indices.reshape(n, h * w).cpu()
    counts = torch.full((h * w, k), float(pseudocount))
    counts.scatter_add_(1, flat.t().contiguous(), torch.ones(h * w, n))
    return counts / counts.sum(1, keepdim=True)


def code_grid_log_likelihood(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``(B,)`` log-likelihood (nats) of index grids ``(B, h, w)`` under per-position probabilities ``(h*w, k)``.

    The prior :func:`fit_code_categorical` fits and :class:`GridSimplexFlow` relaxes: positions independent.
    """
    flat = indices.reshape(indices.shape[0], -1).cpu()
    return torch.log(probs).gather(1, flat.t()).t().sum(1)


@torch.no_grad()
def sample_code_grids(probs: torch.Tensor, n: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` index grids drawn position by position from the categorical ``probs`` ``(h*w, k)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs, n, replacement=True, generator=gen).t().reshape(n, *grid)


def categorical_fit_error(probs: torch.Tensor, grids: torch.Tensor) -> float:
    """Mean over positions of the total-variation distance between ``probs`` ``(h*w, k)`` and the histogram
    of ``grids`` ``(N, h, w)`` at each position."""
    k = probs.shape[1]
    flat = grids.reshape(grids.shape[0], -1)
    hist = torch.stack([torch.bincount(flat[:, p], minlength=k) for p in range(flat.shape[1])]).float()
    hist = hist / hist.sum(1, keepdim=True)
    return float(0.5 * (hist - probs).abs().sum(1).mean())


def seeded_grid_flow(positions: int, k: int, tau: float, *, n_blocks: int, hidden: int, seed: int,
                     device: torch.device | str = "cpu") -> GridSimplexFlow:
    """An untrained :class:`GridSimplexFlow` initialised after ``torch.manual_seed(seed)`` (identity couplings)."""
    torch.manual_seed(seed)
    return GridSimplexFlow(positions, k, tau, n_blocks=n_blocks, hidden=hidden).to(device)


def fit_grid_flow(probs: torch.Tensor, tau: float, *, n_blocks: int, hidden: int, steps: int, batch: int, lr: float,
                  seed: int = 0, device: torch.device | str = "cpu",
                  progress: bool = False) -> tuple[GridSimplexFlow, FlowRun]:
    """A :class:`GridSimplexFlow` fitted with Adam by reverse KL to the Gumbel-softmax relaxation (at ``tau``)
    of the per-position categorical ``probs`` ``(P, k)``.

    Divergence is recorded in the returned :class:`FlowRun`, never raised; the flow then keeps the
    weights of its last finite step. Trains with one CPU thread (:func:`one_thread`).
    """
    positions, k = probs.shape
    flow = seeded_grid_flow(positions, k, tau, n_blocks=n_blocks, hidden=hidden, seed=seed, device=device)
    flow.target = LogSimplexTarget(GumbelSoftmax(probs, tau).to(device))
    with one_thread():
        run = train_reverse_kld(flow, steps, batch, "adam", lr, seed=seed, progress=progress)
    return flow, run


@torch.no_grad()
def flow_argmax_grids(flow: GridSimplexFlow, n: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` argmax index grids of ``n`` samples of ``flow`` (torch seeded with ``seed`` first)."""
    torch.manual_seed(seed)
    log_y, _ = flow.sample(n)
    return log_y.argmax(-1).reshape(n, *grid).cpu()

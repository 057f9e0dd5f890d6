"""The polynomial reduction from MAX-CUT to discrete latent search: graphs, cuts, decoder and target.

Latent search (paper, section 4.2): given a decoder ``g``, a codebook ``c`` of ``k`` vectors, a
grid shape ``(h, w)``, a target ``t`` and the MSE loss, find the index grid
``X in {0..k-1}^(h x w)`` that minimises ``MSE(g(c[X]), t)``.

MAX-CUT (Karp 1972): given a graph on ``N`` vertices with non-negative edge weights ``w_e``,
find a 0/1 label per vertex that maximises the total weight of the edges whose two ends differ.

The reduction (:func:`reduce_max_cut`): put the ``N = h * w`` vertices on the latent grid
(row-major), take ``k = 2`` and the one-dimensional codebook ``c = [[0], [1]]`` so that the code
at vertex ``i`` *is* its label ``x_i``, and let the decoder be one fully connected layer with one
output pixel per edge ``e = (i, j)``::

    pixel_e = s_e * (x_i + x_j) / 2,      target_e = s_e / 2,      s_e = sqrt(w_e / w_max).

For binary labels ``(x_i + x_j - 1)^2 = 1 - [x_i != x_j]``, so the squared error of pixel ``e``
is ``w_e / (4 w_max) * (1 - [x_i != x_j])`` and, with ``E`` pixels and total weight ``W``,

    MSE(X) = (W - cut(X)) / (4 * w_max * E)        (exactly, for every grid X).

Minimising the MSE therefore maximises the cut, and the affine map converts between the two.
With unit weights (MAX-CUT stays NP-hard unweighted, Garey, Johnson and Stockmeyer 1976) every
entry of the decoder and target is 0 or 1/2, so the instance has polynomial size.

The decoder and the instance are built on two small bases, :class:`BinaryCodeDecoder` (the
latent-decoder protocol for ``k = 2`` one-dimensional codes) and :class:`LatentSearchInstance` (a
decoder and its target), which the convolutional reduction of :mod:`vqtto.hardness.spin_glass` shares.
Exact solvers for the reduced instances are in :mod:`vqtto.hardness.exact`; the searches run on them and
scored against the maximum cut are in :mod:`vqtto.hardness.instance_searches`.

Shapes: index grids ``(B, h, w)`` int64, latents ``(B, 1, h, w)``, images ``(B, 1, 1, E)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Graph:
    """An undirected weighted graph on vertices ``0..n-1``.

    Attributes:
        n: number of vertices.
        edges: ``(E, 2)`` int64, each row ``(i, j)`` with ``i < j``, no repeats.
        weights: ``(E,)`` float64, each > 0.
    """

    n: int
    edges: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 2:
            raise ValueError(f"n (number of vertices) must be an int >= 2, got {self.n!r}")
        e, w = self.edges, self.weights
        if e.dim() != 2 or e.shape[1] != 2 or e.dtype != torch.long:
            raise ValueError(f"edges must be an (E, 2) int64 tensor, got shape {tuple(e.shape)} and {e.dtype}")
        if e.shape[0] == 0:
            raise ValueError("edges is empty; a graph needs at least one edge (its decoder has one pixel per edge)")
        if w.shape != (e.shape[0],):
            raise ValueError(f"weights must have shape ({e.shape[0]},) (one per edge), got {tuple(w.shape)}")
        if not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be finite and > 0, got min {float(w.min())!r}")
        if not bool((e[:, 0] < e[:, 1]).all()) or int(e.min()) < 0 or int(e.max()) >= self.n:
            raise ValueError(f"every edge (i, j) needs 0 <= i < j < n={self.n}; got {e.tolist()[:5]}...")
        if torch.unique(e[:, 0] * self.n + e[:, 1]).numel() != e.shape[0]:
            raise ValueError("edges contains the same edge twice; merge them by adding their weights")

    @property
    def total_weight(self) -> float:
        """``W``, the sum of all edge weights (the cut of no assignment exceeds it)."""
        return float(self.weights.sum())


def graph(n: int, edges, weights=None) -> Graph:
    """A :class:`Graph` from a list of ``(i, j)`` pairs (any order) and optional weights (default 1)."""
    e = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)
    e = torch.stack([e.min(1).values, e.max(1).values], 1)
    if bool((e[:, 0] == e[:, 1]).any()):
        raise ValueError(f"edges must join two different vertices; got a self-loop in {e.tolist()}")
    w = torch.ones(e.shape[0], dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    return Graph(n, e, w)


def random_graph(n: int, p: float = 0.5, weighted: bool = False, seed: int = 0) -> Graph:
    """An Erdős–Rényi graph G(n, p); with ``weighted`` the weights are uniform in [0.1, 1].

    Redraws (with the next seed) until the graph has at least one edge. Generally non-planar for
    moderate ``p`` and ``n >= 5``, which matters: MAX-CUT on planar graphs is polynomial.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n (number of vertices) must be an int >= 2, got {n!r}")
    if not 0 < p <= 1:
        raise ValueError(f"p (edge probability) must be in (0, 1], got {p!r}")
    gen = torch.Generator().manual_seed(seed)
    while True:
        i, j = torch.triu_indices(n, n, offset=1)
        keep = torch.rand(i.numel(), generator=gen) < p
        if keep.any():
            break
    e = torch.stack([i[keep], j[keep]], 1)
    w = torch.rand(e.shape[0], generator=gen, dtype=torch.float64) * 0.9 + 0.1 if weighted else None
    return graph(n, e, w)


def cut_values(g: Graph, labels: torch.Tensor) -> torch.Tensor:
    """Cut weight of each labelling: ``labels`` ``(M, n)`` or ``(M, h, w)`` with values 0/1 -> ``(M,)`` float64."""
    x = labels.reshape(labels.shape[0], -1)
    if x.shape[1] != g.n:
        raise ValueError(f"labels must have {g.n} entries per row (one per vertex), got {x.shape[1]}")
    if bool(((x != 0) & (x != 1)).any()):
        raise ValueError("labels must be 0 or 1")
    differ = (x[:, g.edges[:, 0]] != x[:, g.edges[:, 1]]).to(torch.float64)
    return differ @ g.weights


def adjacency(g: Graph) -> torch.Tensor:
    """``(n, n)`` float64 symmetric weight matrix of ``g`` (0 where there is no edge)."""
    a = torch.zeros(g.n, g.n, dtype=torch.float64)
    a[g.edges[:, 0], g.edges[:, 1]] = g.weights
    return a + a.t()


class BinaryCodeDecoder(nn.Module):
    """The latent-decoder protocol for the reductions' ``k = 2`` one-dimensional codebooks.

    Subclasses set ``self.grid`` and register the ``(2, 1)`` buffer ``_codebook`` (code 0 below code
    1), and implement ``decode(codes (B,1,h,w))``. This class gives ``codebook``,
    ``nearest(z (B,1,h,w)) -> (B,h,w)`` (threshold halfway between the codes),
    ``lookup(idx (B,h,w)) -> (B,1,h,w)``, ``decode_indices`` and the latents' shape check.
    """

    grid: tuple[int, int]

    @property
    def codebook(self) -> torch.Tensor:
        """``(2, 1)`` the two code vectors."""
        return self._codebook

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Continuous latents ``(B, 1, h, w)`` -> nearest-code indices ``(B, h, w)`` int64."""
        self._check_latents(z)
        return (z.detach()[:, 0] > float(self._codebook.mean())).long()

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, h, w)`` int64 in {0, 1} -> codes ``(B, 1, h, w)``."""
        if indices.dtype != torch.long:
            raise TypeError(f"indices must be int64, got {indices.dtype}")
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.grid:
            raise ValueError(f"indices must have shape (B, {self.grid[0]}, {self.grid[1]}), got {tuple(indices.shape)}")
        if bool(((indices < 0) | (indices > 1)).any()):
            raise ValueError("indices must be 0 or 1 (the codebook has k=2 codes)")
        return self._codebook[indices].permute(0, 3, 1, 2)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Index grids ``(B, h, w)`` int64 -> images."""
        return self.decode(self.lookup(indices))

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != 1 or tuple(z.shape[2:]) != self.grid:
            raise ValueError(f"latents must have shape (B, 1, {self.grid[0]}, {self.grid[1]}), got {tuple(z.shape)}")


class CutDecoder(BinaryCodeDecoder):
    """The reduction's decoder: ``k = 2`` codes ``[[0], [1]]`` and one fully connected layer.

    Implements the latent-decoder protocol the searches use (:class:`BinaryCodeDecoder`):
    ``decode(codes (B,1,h,w)) -> (B,1,1,E)``, one pixel per edge, in [0, 1] for codes in [0, 1].
    """

    def __init__(self, g: Graph, grid: tuple[int, int], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        h, w = _check_grid(grid, g.n)
        self.grid = (h, w)
        self.n_pixels = g.edges.shape[0]
        scale = torch.sqrt(g.weights / g.weights.max())  # s_e
        weight = torch.zeros(self.n_pixels, g.n, dtype=torch.float64)
        rows = torch.arange(self.n_pixels)
        weight[rows, g.edges[:, 0]] = scale / 2
        weight[rows, g.edges[:, 1]] = scale / 2
        self.layer = nn.Linear(g.n, self.n_pixels, bias=False).to(dtype)
        with torch.no_grad():
            self.layer.weight.copy_(weight.to(dtype))
        self.layer.requires_grad_(False)
        self.register_buffer("_codebook", torch.tensor([[0.0], [1.0]], dtype=dtype))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, 1, h, w)`` -> images ``(B, 1, 1, E)``: pixel e = s_e (z_i + z_j) / 2."""
        self._check_latents(codes)
        return self.layer(codes.flatten(1)).view(codes.shape[0], 1, 1, self.n_pixels)

    def output_bounds(self):
        """A function ``(lo, hi) -> (lo_out, hi_out)``: bounds on the ``(E,)`` pixels when latent position
        ``i`` ranges over ``[lo_i, hi_i]`` (``(n,)`` float64 arrays), by interval arithmetic."""
        weight = self.layer.weight.detach().double().cpu().numpy()
        w_pos, w_neg = np.clip(weight, 0, None), np.clip(weight, None, 0)
        return lambda lo, hi: (w_pos @ lo + w_neg @ hi, w_pos @ hi + w_neg @ lo)


def _check_grid(grid, n: int) -> tuple[int, int]:
    if len(grid) != 2 or any(not isinstance(s, int) or s < 1 for s in grid):
        raise ValueError(f"grid must be a pair (h, w) of positive ints, got {grid!r}")
    h, w = grid
    if h * w != n:
        raise ValueError(f"grid {grid!r} has {h * w} positions but the graph has {n} vertices; they must match")
    return h, w


class LatentSearchInstance:
    """A decoder (:class:`BinaryCodeDecoder`) and a ``(1, C, H, W)`` target: one latent-search instance.

    Subclasses are dataclasses with the fields ``decoder`` and ``target``.
    """

    decoder: BinaryCodeDecoder
    target: torch.Tensor

    @property
    def grid(self) -> tuple[int, int]:
        return self.decoder.grid

    def targets(self, batch: int) -> torch.Tensor:
        """The target repeated ``batch`` times: ``(batch, C, H, W)``."""
        return self.target.expand(batch, -1, -1, -1)

    def mse_of_grids(self, indices: torch.Tensor) -> torch.Tensor:
        """MSE to the target of each decoded grid: ``(B, h, w)`` int64 -> ``(B,)`` (decoder dtype)."""
        with torch.no_grad():
            images = self.decoder.decode_indices(indices)
        return (images - self.target).pow(2).flatten(1).mean(1)


@dataclass
class Reduction(LatentSearchInstance):
    """A MAX-CUT instance turned into a latent-search instance.

    Attributes:
        graph: the MAX-CUT instance.
        decoder: :class:`CutDecoder` (the latent-decoder protocol).
        target: ``(1, 1, 1, E)`` the target image, ``s_e / 2`` per pixel.
        slope: ``4 * w_max * E``; ``MSE = (W - cut) / slope``.
    """

    graph: Graph
    decoder: CutDecoder
    target: torch.Tensor
    slope: float

    def loss_from_cut(self, cut):
        """Cut weight -> the MSE of the corresponding grid (exact affine map)."""
        return (self.graph.total_weight - cut) / self.slope

    def cut_from_loss(self, loss):
        """MSE of a grid -> the weight of the corresponding cut (exact affine map)."""
        return self.graph.total_weight - loss * self.slope


def reduce_max_cut(g: Graph, grid: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32) -> Reduction:
    """Build the decoder and target whose MSE-minimal index grid is a maximum cut of ``g``.

    Args:
        g: the graph; vertex ``i`` sits at grid position ``divmod(i, w)``.
        grid: ``(h, w)`` with ``h * w == g.n``; None takes ``(1, n)``.
        dtype: float dtype of decoder and target (float64 for exact checks).
    """
    decoder = CutDecoder(g, grid or (1, g.n), dtype=dtype)
    scale = torch.sqrt(g.weights / g.weights.max())
    target = (scale / 2).to(dtype).view(1, 1, 1, -1)
    slope = 4.0 * float(g.weights.max()) * g.edges.shape[0]
    return Reduction(g, decoder, target, slope)


def squarest_grid(n: int) -> tuple[int, int]:
    """The ``(h, w)`` with ``h * w == n`` and ``h <= w`` closest to square (``(1, n)`` for a prime ``n``)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of latent positions) must be an int >= 1, got {n!r}")
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return h, n // h

"""The planar Ising spin glass in a field, reduced to latent search with a convolutional decoder.

The spin glass on an ``h x w`` grid: one spin ``s_p = +-1`` per position, a coupling ``J_pq`` on each
nearest-neighbour edge and a field ``h_p`` on each position, with energy

    E(s) = - sum_{<p,q>} J_pq s_p s_q - sum_p h_p s_p.

Finding a ground state is NP-hard already for ``J in {-1, 0, +1}`` and a uniform field
(Barahona 1982), although without a field the planar case is polynomial.

The reduction (:func:`reduce_spin_glass`): ``k = 2`` one-dimensional codes ``c = [[-1], [+1]]``, so
the code at position ``p`` *is* the spin ``s_p``, and one fixed decoder (:class:`ConvDecoder`) that
does not depend on the instance::

    ConvTranspose2d(1 -> 2, kernel 3, stride 2, padding 1)   ReLU   Conv2d(2 -> 1, kernel 1)

The stride-2 transposed convolution spreads the ``h x w`` latent onto a ``(2h-1) x (2w-1)`` image
in which pixel ``(2i, 2j)`` sees position ``(i, j)`` alone, pixel ``(2i, 2j+1)`` the horizontal edge
``(i, j)-(i, j+1)`` alone, pixel ``(2i+1, 2j)`` the vertical edge ``(i, j)-(i+1, j)`` alone, and
pixel ``(2i+1, 2j+1)`` nothing. Channel 0 (a plus-shaped kernel without centre, bias -1) gives
``ReLU(s_p + s_q - 1) = [s_p = s_q = +1]`` on the edge pixels and 0 elsewhere; channel 1 (centre
tap only, bias 0) gives ``ReLU(s_p) = [s_p = +1]`` on the position pixels and 0 elsewhere; the
1x1 convolution adds the two. Every pixel is thus 0 or 1 and depends on one edge or one position.

The instance lives in the target only: ``(1 + J_pq) / 2`` on an edge pixel, ``(2 + h_p - d_p) / 4``
on a position pixel (``d_p``: the sum of the couplings at ``p``), 0 elsewhere. For a 0/1 pixel
``v``, ``(v - t)^2 = (1 - 2t) v + t^2``; expanding ``v`` in the spins, every edge pixel contributes
``-J_pq s_p s_q / 4`` plus terms in ``s_p`` and ``s_q`` that the position pixels cancel, so that
for every grid

    MSE(X) = (C + E(s) / 4) / P,      P = (2h - 1)(2w - 1),

with ``C`` (:attr:`SpinGlassReduction.offset`) a constant of the instance. Minimising the MSE
finds a ground state, and the construction takes time linear in the grid.

Shapes: index grids ``(B, h, w)`` int64 (index 1 is spin +1), latents ``(B, 1, h, w)``, images
``(B, 1, 2h-1, 2w-1)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import BinaryCodeDecoder, LatentSearchInstance


@dataclass(frozen=True)
class SpinGlass:
    """An Ising spin glass on the nearest-neighbour edges of an ``h x w`` grid, in a field.

    Attributes:
        horizontal: ``(h, w-1)`` float64, coupling of ``(i, j)-(i, j+1)``.
        vertical: ``(h-1, w)`` float64, coupling of ``(i, j)-(i+1, j)``.
        field: ``(h, w)`` float64, the field at each position.
    """

    horizontal: torch.Tensor
    vertical: torch.Tensor
    field: torch.Tensor

    def __post_init__(self) -> None:
        f = self.field
        if f.dim() != 2 or f.numel() < 2:
            raise ValueError(f"field must be an (h, w) tensor with at least 2 positions, got shape {tuple(f.shape)}")
        h, w = f.shape
        for name, t, shape in (("horizontal", self.horizontal, (h, w - 1)), ("vertical", self.vertical, (h - 1, w))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} for a {h}x{w} grid, got {tuple(t.shape)}")
        for name in ("horizontal", "vertical", "field"):
            t = getattr(self, name)
            if t.dtype != torch.float64 or not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} must be a finite float64 tensor, got {t.dtype}")

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.field.shape)

    @property
    def n(self) -> int:
        """Number of spins (latent positions)."""
        return self.field.numel()

    @property
    def n_edges(self) -> int:
        return self.horizontal.numel() + self.vertical.numel()

    def energies(self, indices: torch.Tensor) -> torch.Tensor:
        """Energy of each configuration: index grids ``(M, h, w)`` or ``(M, h*w)`` with values 0/1
        (spin ``2 X - 1``) -> ``(M,)`` float64."""
        h, w = self.grid
        if indices.shape[0] and indices[0].numel() != h * w:
            raise ValueError(f"indices must have {h * w} entries per row (one per position), got {indices[0].numel()}")
        if bool(((indices != 0) & (indices != 1)).any()):
            raise ValueError("indices must be 0 or 1")
        s = (2 * indices.reshape(-1, h, w) - 1).double()
        pairs = ((s[:, :, :-1] * s[:, :, 1:] * self.horizontal).sum((1, 2))
                 + (s[:, :-1] * s[:, 1:] * self.vertical).sum((1, 2)))
        return -pairs - (s * self.field).sum((1, 2))


def random_spin_glass(grid, seed: int = 0) -> SpinGlass:
    """A +-J spin glass on ``grid`` ``(h, w)``: couplings uniform in {-1, +1}, fields uniform in {-1, 0, +1}."""
    if len(grid) != 2 or any(not isinstance(s, int) or s < 1 for s in grid) or grid[0] * grid[1] < 2:
        raise ValueError(f"grid must be a pair (h, w) of positive ints with h * w >= 2, got {grid!r}")
    h, w = grid
    gen = torch.Generator().manual_seed(seed)

    def draw(shape, values):
        return torch.tensor(values, dtype=torch.float64)[torch.randint(len(values), shape, generator=gen)]

    return SpinGlass(draw((h, w - 1), [-1.0, 1.0]), draw((h - 1, w), [-1.0, 1.0]), draw((h, w), [-1.0, 0.0, 1.0]))


def coupling_matrix(sg: SpinGlass) -> torch.Tensor:
    """``(n, n)`` float64 symmetric matrix ``M`` with ``M_pq = J_pq`` on the grid's edges (row-major),
    so that ``-E(s) = s^T M s / 2 + h^T s``."""
    h, w = sg.grid
    m = torch.zeros(h, w, h, w, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w - 1), indexing="ij")
    m[i, j, i, j + 1] = sg.horizontal
    i, j = torch.meshgrid(torch.arange(h - 1), torch.arange(w), indexing="ij")
    m[i, j, i + 1, j] = sg.vertical
    m = m.view(h * w, h * w)
    return m + m.t()


class ConvDecoder(BinaryCodeDecoder):
    """The reduction's decoder: codes ``[[-1], [+1]]``, a stride-2 transposed convolution, ReLU and a
    1x1 convolution, with fixed weights that do not depend on the instance (module docstring).

    Implements the latent-decoder protocol (:class:`~vqtto.hardness.BinaryCodeDecoder`):
    ``decode(codes (B,1,h,w)) -> (B,1,2h-1,2w-1)``, each pixel 0 or 1 for codes +-1.
    """

    def __init__(self, grid: tuple[int, int], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if len(grid) != 2 or any(not isinstance(s, int) or s < 1 for s in grid):
            raise ValueError(f"grid must be a pair (h, w) of positive ints, got {grid!r}")
        self.grid = tuple(grid)
        up = nn.ConvTranspose2d(1, 2, kernel_size=3, stride=2, padding=1)
        mix = nn.Conv2d(2, 1, kernel_size=1, bias=False)
        kernel = torch.zeros(1, 2, 3, 3)
        kernel[0, 0, 0, 1] = kernel[0, 0, 1, 0] = kernel[0, 0, 1, 2] = kernel[0, 0, 2, 1] = 1.0  # the 4 neighbours
        kernel[0, 1, 1, 1] = 1.0                                                                # the position itself
        with torch.no_grad():
            up.weight.copy_(kernel)
            up.bias.copy_(torch.tensor([-1.0, 0.0]))
            mix.weight.fill_(1.0)
        self.net = nn.Sequential(up, nn.ReLU(), mix).to(dtype).requires_grad_(False)
        self.register_buffer("_codebook", torch.tensor([[-1.0], [1.0]], dtype=dtype))

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(2h - 1, 2w - 1)``."""
        return 2 * self.grid[0] - 1, 2 * self.grid[1] - 1

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, 1, h, w)`` -> images ``(B, 1, 2h-1, 2w-1)``."""
        self._check_latents(codes)
        return self.net(codes)

    def output_bounds(self):
        """A function ``(lo, hi) -> (lo_out, hi_out)``: bounds on the ``(P,)`` pixels when latent position
        ``i`` (row-major) ranges over ``[lo_i, hi_i]`` (``(n,)`` float64 arrays), by interval bound
        propagation through the layers (centre and radius; ReLU is monotone)."""
        layers = copy.deepcopy(self.net).double()
        radius_layers = copy.deepcopy(layers)
        for layer in radius_layers:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                layer.weight.abs_()
                if layer.bias is not None:
                    layer.bias.zero_()
        shape = (1, 1, *self.grid)

        def bounds(lo: np.ndarray, hi: np.ndarray):
            lo_t = torch.as_tensor(lo, dtype=torch.float64).view(shape)
            hi_t = torch.as_tensor(hi, dtype=torch.float64).view(shape)
            with torch.no_grad():
                for layer, radius_layer in zip(layers, radius_layers):
                    if isinstance(layer, nn.ReLU):
                        lo_t, hi_t = lo_t.clamp(min=0), hi_t.clamp(min=0)
                    else:
                        mid, rad = layer((lo_t + hi_t) / 2), radius_layer((hi_t - lo_t) / 2)
                        lo_t, hi_t = mid - rad, mid + rad
            return lo_t.flatten().numpy(), hi_t.flatten().numpy()

        return bounds


@dataclass
class SpinGlassReduction(LatentSearchInstance):
    """A spin glass turned into a latent-search instance with a convolutional decoder.

    Attributes:
        spin_glass: the instance.
        decoder: :class:`ConvDecoder` on the spin glass's grid.
        target: ``(1, 1, 2h-1, 2w-1)`` the target image.
        offset: ``C`` in ``MSE = (C + E / 4) / P``.
    """

    spin_glass: SpinGlass
    decoder: ConvDecoder
    target: torch.Tensor
    offset: float

    @property
    def pixels(self) -> int:
        """``P = (2h - 1)(2w - 1)``, the pixels the MSE averages over."""
        return self.target.numel()

    @property
    def slope(self) -> float:
        """``1 / (4 P)``: the MSE rises by this much per unit of energy."""
        return 1.0 / (4 * self.pixels)

    def loss_from_energy(self, energy):
        """Energy of a configuration -> the MSE of the corresponding grid (exact affine map)."""
        return (self.offset + energy / 4) / self.pixels

    def energy_from_loss(self, loss):
        """MSE of a grid -> the energy of the corresponding configuration (exact affine map)."""
        return 4 * (loss * self.pixels - self.offset)


def reduce_spin_glass(sg: SpinGlass, dtype: torch.dtype = torch.float32) -> SpinGlassReduction:
    """Build the target (and the fixed decoder) whose MSE-minimal index grid is a ground state of ``sg``.

    Args:
        sg: the spin glass; index 1 at position ``p`` is spin ``s_p = +1``.
        dtype: float dtype of decoder and target (float64 for exact checks).
    """
    h, w = sg.grid
    degree = torch.zeros(h, w, dtype=torch.float64)   # d_p: sum of the couplings at p
    degree[:, :-1] += sg.horizontal
    degree[:, 1:] += sg.horizontal
    degree[:-1] += sg.vertical
    degree[1:] += sg.vertical
    decoder = ConvDecoder((h, w), dtype=dtype)
    target = torch.zeros(decoder.image_shape, dtype=torch.float64)
    target[0::2, 1::2] = (1 + sg.horizontal) / 2
    target[1::2, 0::2] = (1 + sg.vertical) / 2
    tau = (2 + sg.field - degree) / 4
    target[0::2, 0::2] = tau
    couplings = torch.cat([sg.horizontal.flatten(), sg.vertical.flatten()])
    edge_part = ((1 + couplings) ** 2 / 4 - couplings / 4).sum()
    position_part = ((1 - 2 * tau) / 2 + tau ** 2).sum()
    return SpinGlassReduction(sg, decoder, target.to(dtype)[None, None], float(edge_part + position_part))

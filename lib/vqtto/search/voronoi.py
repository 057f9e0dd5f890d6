"""Voronoi-cell geometry of a codebook: exact nearest codes and how many repeats of a step leave a cell.

A continuous latent ``e`` ``(n, D, h, w)`` moved by ``t`` repeats of a step ``d`` ``(n, D, h, w)``
keeps its nearest-code grid ``(n, h, w)`` int64 until, at some position, it crosses into another
code's Voronoi cell. These functions count that ``t`` in closed form against a codebook
``(k, D)``, without a decoder call; the straight-through search (Algorithms 2 and 3) uses them.
"""

from __future__ import annotations

import math

import torch

__all__ = ["nearest_exact", "position_steps", "steps_to_change"]


def nearest_exact(z: torch.Tensor, codebook: torch.Tensor, chunk_elems: int = 1 << 22) -> torch.Tensor:
    """Nearest code by Euclidean distance in float64: ``(n, D, h, w)`` -> ``(n, h, w)`` int64.

    The same as ``model.nearest`` except at near-ties that float32 arithmetic cannot resolve; the
    straight-through search uses it so that its analytic repeat counts are exact.
    """
    n, dim, h, w = z.shape
    cb = codebook.detach().double()
    c2 = cb.pow(2).sum(1)
    per = max(1, chunk_elems // max(1, h * w * cb.shape[0]))
    out = []
    for s in range(0, n, per):
        flat = z[s:s + per].detach().double().permute(0, 2, 3, 1).reshape(-1, dim)
        out.append((c2 - 2 * flat @ cb.t()).argmin(1).view(-1, h, w))
    return torch.cat(out) if out else torch.zeros(0, h, w, dtype=torch.long, device=z.device)


def position_steps(e: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor,
                   dtype: torch.dtype = torch.float64, chunk_elems: int = 1 << 22) -> torch.Tensor:
    """Per position, the number of repeats of step ``d`` after which its nearest code changes.

    Moving ``e + t d``, code ``j`` overtakes the current code ``i`` at a position when
    ``|e + t d - c_j|^2 < |e + t d - c_i|^2``, i.e. ``A_j + t B_j < 0`` with
    ``A_j = |e - c_j|^2 - |e - c_i|^2 >= 0`` and ``B_j = 2 d.(c_i - c_j)``: first at
    ``t = floor(A_j / -B_j) + 1`` when ``B_j < 0``, never otherwise. No decoder call is needed.

    Args:
        e, d: ``(n, D, h, w)`` continuous latents and the step added per repeat.
        idx: ``(n, h, w)`` int64, the current nearest indices of ``e``.
        codebook: ``(k, D)``.
        dtype: float64 is exact enough to agree with :func:`nearest_exact`; float32 is faster
            and may be off by one step near ties.

    Returns:
        ``(n, h*w)`` float64, the smallest such t over codes at each position (inf if none).
    """
    n, dim, h, w = e.shape
    cb = codebook.detach().to(dtype)
    c2 = cb.pow(2).sum(1)
    out = []
    per = max(1, chunk_elems // max(1, h * w * cb.shape[0]))
    for s in range(0, n, per):
        E = e[s:s + per].detach().to(dtype).permute(0, 2, 3, 1).reshape(-1, h * w, dim)
        D = d[s:s + per].detach().to(dtype).permute(0, 2, 3, 1).reshape(-1, h * w, dim)
        cur = cb[idx[s:s + per].reshape(-1, h * w)]
        base = cur.pow(2).sum(-1) - 2 * (E * cur).sum(-1)
        m = E.shape[0] * h * w
        a = torch.addmm(c2, E.reshape(m, dim), cb.t(), alpha=-2).view(-1, h * w, cb.shape[0])
        a.sub_(base[..., None]).clamp_min_(1e-30)                                   # A_j (> 0, so a / 0 = inf)
        nb = torch.addmm((-2 * (D * cur).sum(-1)).reshape(m, 1), D.reshape(m, dim), cb.t(), alpha=2)
        # -B_j, 0 where j never overtakes; adding +0.0 turns a -0.0 into +0.0, whose quotient is +inf, not -inf
        nb = nb.view(-1, h * w, cb.shape[0]).clamp_min_(0).add_(0.0)
        ratio = a.div_(nb)                                                           # inf where -B_j <= 0
        ratio.scatter_(2, idx[s:s + per].reshape(-1, h * w, 1), math.inf)  # the current code (0/0 up to rounding)
        out.append(torch.floor(ratio.amin(2).double()) + 1)
    return torch.cat(out)


def steps_to_change(e: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``(n,)`` float64: repeats of ``d`` until *some* position's nearest code changes (inf if never).

    The minimum over positions of :func:`position_steps` in float64, consistent with
    :func:`nearest_exact`.
    """
    return position_steps(e, d, idx, codebook, torch.float64).amin(1)

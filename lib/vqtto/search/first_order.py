"""The first-order table: the predicted loss change of every single-position code change.

One backward pass through the decoder gives the gradient ``g_p = dL/dz_p`` of the loss at the
codes of a grid. Changing position p from its current code ``c_cur(p)`` to code ``c_j`` then
changes the loss by about ``D[p, j] = <g_p, c_j - c_cur(p)>`` (``D[p, cur(p)] = 0``): the whole
``(n, h*w, k)`` table is one matrix product of the gradients with the codebook. Every gradient
sampler of :mod:`vqtto.search` (and the greedy search) draws its moves from this table.
"""

from __future__ import annotations

import torch

__all__ = ["apply_moves", "best_moves", "best_per_position", "first_order_table", "linearisation_check"]


def first_order_table(codebook: torch.Tensor, grads: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``D`` ``(n, h*w, k)``: the first-order loss change of setting position p to code j.

    Args:
        codebook: ``(k, D)`` code vectors.
        grads: ``(n, D, h, w)`` the loss gradient at the codes of the grids ``idx``.
        idx: ``(n, h, w)`` int64 the current grids.

    Returns:
        ``D[i, p, j] = <grads[i, :, p], codebook[j] - codebook[idx[i, p]]>``, positions in row-major
        order; exactly 0 where ``j`` is the current code.
    """
    n, dim, h, w = grads.shape
    if idx.shape != (n, h, w):
        raise ValueError(f"idx must be (n, h, w) = {(n, h, w)}, got {tuple(idx.shape)}")
    if codebook.dim() != 2 or codebook.shape[1] != dim:
        raise ValueError(f"codebook must be (k, {dim}), got {tuple(codebook.shape)}")
    cb = codebook.detach().to(grads.dtype)
    g = grads.permute(0, 2, 3, 1).reshape(n, h * w, dim)
    flat_idx = idx.reshape(n, h * w)
    table = g @ cb.t() - (g * cb[flat_idx]).sum(-1, keepdim=True)
    return table.scatter_(2, flat_idx[..., None], 0.0)


@torch.no_grad()
def linearisation_check(model, loss, idx: torch.Tensor, n_moves: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Predicted (table) against true loss change of ``n_moves`` random single-position moves.

    For each grid of ``idx`` ``(B, h, w)`` (pair i scored with ``loss`` row i, a
    :class:`~vqtto.search.losses.PairLoss`), draws ``n_moves`` random (position, code) changes and
    returns ``{"predicted": (B, n_moves), "true": (B, n_moves), "rank": (B, n_moves)}``: the
    table's entry, the decoded loss change and the move's rank in its pair's table (0 = the
    table's most promising move). Ready for a scatter plot of the figure of the first-order table.
    """
    from .driver import Evaluator

    b, h, w = idx.shape
    k = model.codebook.shape[0]
    ev = Evaluator(model, loss, b)
    rows = torch.arange(b, device=idx.device)
    values, grads = ev.loss_and_grad(idx, rows)
    table = first_order_table(model.codebook, grads, idx)
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randint(h * w, (b, n_moves), generator=gen).to(idx.device)
    code = torch.randint(k, (b, n_moves), generator=gen).to(idx.device)
    true = ev.losses(apply_moves(idx, pos * k + code, k), rows) - values[:, None]
    predicted = table.gather(1, pos[..., None].expand(-1, -1, k)).gather(2, code[..., None])[..., 0]
    order = table.flatten(1).argsort(1).argsort(1)
    rank = order.gather(1, pos * k + code)
    return {"predicted": predicted.cpu(), "true": true.cpu(), "rank": rank.cpu()}


def apply_moves(idx: torch.Tensor, moves: torch.Tensor, k: int) -> torch.Tensor:
    """Candidate grids ``(n, m, h, w)``: grid i with the single move ``moves[i, c]`` (= p * k + j) applied."""
    n, h, w = idx.shape
    m = moves.shape[1]
    cand = idx.reshape(n, 1, h * w).repeat(1, m, 1)
    cand.scatter_(2, (moves // k)[..., None], (moves % k)[..., None])
    return cand.view(n, m, h, w)


def best_moves(table: torch.Tensor, m: int) -> torch.Tensor:
    """``(n, m)`` the m moves (``p * k + j``) of lowest predicted change in a table ``(n, h*w, k)``."""
    return table.flatten(1).topk(min(m, table.shape[1] * table.shape[2]), dim=1, largest=False).indices


def best_per_position(table: torch.Tensor, m: int) -> torch.Tensor:
    """``(n, m)`` moves (``p * k + j``): each position's own best code, the m positions of lowest such change.

    Unlike :func:`best_moves`, a few positions with large gradients cannot take every slot with
    their extreme codes: the m moves are at m distinct positions (fewer than m positions: all of them).
    """
    n, p, k = table.shape
    best, code = table.min(2)
    pos = best.topk(min(m, p), dim=1, largest=False).indices
    return pos * k + code.gather(1, pos)

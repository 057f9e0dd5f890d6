"""Surrogate screening: a few free positions searched exactly through a fitted linear image model.

When only m positions of a grid ``(h, w)`` are free (a sub-problem, see
:mod:`~vqtto.search.subproblems`, or an edit of a few codes), every assignment of them can be
*predicted* cheaply once the decoder's response to each position is known, and only the most
promising few decoded. The response is learnt from decodes, not from the gradient (the first-order
table overpromises for codes far from the current one):

1. **Probes.** The current grid is decoded, and for each free position ``probes`` grids that change
   only that position, to codes spread over the codebook (farthest-point order from its current
   code, so the probes span the codebook's extent).
2. **Fit.** Per pair, a linear map from the free positions' code vectors ``(m * D,)`` (and a
   constant) to the decoded image is fitted by weighted ridge least squares on every grid decoded
   so far. The weight of a decoded grid is ``exp(-focus * (L - L_min) / (L_median - L_min))``, so
   the fit is sharpest where the loss is low (a trust region, in the spirit of surrogate-based
   search).
3. **Screen.** Every one of the ``k ** m`` assignments gets a predicted image, hence a predicted
   loss (the search's own loss applied to the prediction); the best ones not yet decoded are
   decoded exactly. Steps 2 and 3 repeat ``rounds`` times over the rest of the budget, each
   refit using all decodes so far.

Cost: one decoder-call equivalent per decoded image (:data:`~vqtto.search.trace.FORWARD`); the
fits and predictions need no decoder. With a budget of at least ``k ** m`` every assignment is
decoded and the optimum is exact. The defaults (16 probes, 6 rounds, focus 2) were chosen on
chapter 3's validation pairs, never on the reported ones.
"""

from __future__ import annotations

import time

import torch

from .chains import movable_mask
from .driver import check_positive, pair_losses
from .losses import LossFn
from .subproblems import MAX_GRIDS
from .trace import FORWARD, SearchTrace

__all__ = ["spread_codes", "surrogate_screen"]


def spread_codes(codebook: torch.Tensor, n: int, first: int) -> torch.Tensor:
    """``(n,)`` int64 codes in farthest-point order over ``codebook`` ``(k, D)``, starting at ``first``
    (which is excluded from the result): each next code is the one farthest from those chosen."""
    k = codebook.shape[0]
    n = min(n, k - 1)
    cb = codebook.detach().double()
    dist = (cb - cb[first]).pow(2).sum(1)
    chosen = []
    for _ in range(n):
        j = int(dist.argmax())
        chosen.append(j)
        dist = torch.minimum(dist, (cb - cb[j]).pow(2).sum(1))
    return torch.tensor(chosen, dtype=torch.long, device=codebook.device)


class _Pair:
    """What one pair decoded, in order: assignment ids, images ``(T, N)`` flattened, losses, times."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.images: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.times: list[float] = []
        self.shape: tuple[int, ...] = ()

    def add(self, ids: torch.Tensor, images: torch.Tensor, losses: torch.Tensor, when: float) -> None:
        self.ids += ids.tolist()
        self.images.append(images.flatten(1))
        self.losses.append(losses)
        self.times += [when] * len(ids)
        self.shape = tuple(images.shape[1:])


def _fit(z: torch.Tensor, x: torch.Tensor, losses: torch.Tensor, focus: float, ridge: float) -> torch.Tensor:
    """Weighted ridge least squares: the ``(q, N)`` map from ``z`` ``(T, q)`` (its last column constant) to ``x`` ``(T, N)``."""
    lo, med = losses.min(), torch.quantile(losses, 0.5)
    w = torch.exp(-focus * (losses - lo) / (med - lo).clamp_min(1e-12))
    a = z.t() @ (w[:, None] * z) + ridge * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    return torch.linalg.solve(a, z.t() @ (w[:, None] * x))


@torch.no_grad()
def surrogate_screen(model, z_start: torch.Tensor, loss: LossFn, *, budget: float = 64,
                     movable: torch.Tensor | None = None, probes: int = 16, rounds: int = 6, focus: float = 2.0,
                     ridge: float = 1e-3, max_grids: int = MAX_GRIDS, chunk: int = 4096,
                     progress: bool = False) -> SearchTrace:
    """Search the free positions of each pair's grid through a fitted linear image model (module docstring).

    Args:
        model: a latent decoder with ``codebook`` ``(k, D)``, ``nearest``, ``lookup`` and ``decode``.
        z_start: ``(B, D, h, w)`` latents; their nearest codes are the start grids (and hold the
            frozen positions).
        loss: images ``(B, C, H, W)`` -> ``(B,)``, pair i with grid i.
        budget: decoder-call equivalents per pair (one per decoded image), >= 1.
        movable: ``(B, h, w)`` or ``(h, w)`` bool, the free positions; each pair's ``k ** m`` must be
            at most ``max_grids``.
        probes: decodes per free position before the first fit, >= 1.
        rounds: fits (each followed by a batch of decodes), >= 1.
        focus: how sharply the fit favours low-loss decodes, >= 0 (0: plain least squares).
        ridge: ridge term of the fit, > 0.
        chunk: assignments predicted at a time.
        progress: unused (one batch of decodes per round; nothing to show).

    Returns:
        A :class:`SearchTrace` (method ``"surrogate"``): per pair the start grid, then each decoded
        grid that improved on the best so far, with its cost and time.
    """
    for name, value, minimum in (("probes", probes, 1), ("rounds", rounds, 1), ("chunk", chunk, 1)):
        check_positive(name, value, integer=True, minimum=minimum)
    check_positive("budget", budget, minimum=1)
    check_positive("focus", focus, minimum=0)
    check_positive("ridge", ridge)
    check_positive("max_grids", max_grids, integer=True, minimum=1)
    t0 = time.perf_counter()
    k = model.codebook.shape[0]
    if movable is None:
        raise ValueError("surrogate_screen needs movable=, the few free positions (it predicts all k**m assignments)")
    start = model.nearest(z_start)
    b, h, w = start.shape
    free = movable_mask(movable, b, h, w, start.device)
    counts = free.sum(1)
    if int(counts.max()) > 64 or k ** int(counts.max()) > max_grids:
        most = int(counts.max())
        raise ValueError(f"movable frees up to m={most} positions of a pair: k**m = {k}**{most} assignments exceed "
                         f"max_grids={max_grids:,}; free fewer positions (surrogate screening is for a few)")
    pairs = [_Pair() for _ in range(b)]
    for m in sorted(set(counts.tolist())):
        rows = (counts == m).nonzero().squeeze(1)
        _screen_group(model, loss, start, free, rows, m, pairs, int(budget // FORWARD), probes, rounds, focus,
                      ridge, chunk, b, t0)
    return _trace(model, pairs, start, free, t0, dict(budget=budget, probes=probes, rounds=rounds, focus=focus,
                                                       ridge=ridge))


def _screen_group(model, loss, start, free, rows, m: int, pairs: list[_Pair], decodes: int, probes: int,
                  rounds: int, focus: float, ridge: float, chunk: int, n_pairs: int, t0: float) -> None:
    """Surrogate screening of the pairs ``rows`` ``(G,)``, which all have ``m`` free positions; fills ``pairs``."""
    cb = model.codebook.detach()
    k = cb.shape[0]
    dev = start.device
    n = k ** m
    powers = k ** torch.arange(m, device=dev)
    flat = start.flatten(1)[rows]                                                            # (G, h*w)
    pos = torch.stack([free[r].nonzero().squeeze(1) for r in rows.tolist()])                 # (G, m)
    current = (flat.gather(1, pos) * powers).sum(1)                                          # (G,)

    def digits(ids: torch.Tensor) -> torch.Tensor:
        """``(T,)`` assignment ids -> ``(T, m)`` codes of the free positions."""
        return ids[:, None] // powers[None] % k

    def decode(group: list[int], ids: list[torch.Tensor]) -> None:
        grids = torch.cat([flat[g].repeat(len(i), 1).scatter_(1, pos[g].repeat(len(i), 1), digits(i))
                           for g, i in zip(group, ids)])
        pair_rows = torch.cat([rows[g].repeat(len(i)) for g, i in zip(group, ids)])
        images = model.decode(model.lookup(grids.view(-1, *start.shape[1:])))
        values = pair_losses(loss, images, pair_rows, n_pairs)
        at, now = 0, time.perf_counter() - t0
        for g, i in zip(group, ids):
            pairs[int(rows[g])].add(i, images[at:at + len(i)], values[at:at + len(i)], now)
            at += len(i)

    everyone = list(range(len(rows)))
    if n <= decodes:  # the budget covers every assignment: decode them all, the current one first
        every = torch.arange(n, device=dev)
        decode(everyone, [torch.cat([current[g:g + 1], every[every != current[g]]]) for g in everyone])
        return
    first = []
    for g in everyone:
        ids = [current[g:g + 1]]
        for j in range(m):
            d = digits(current[g:g + 1]).repeat(min(probes, k - 1), 1)
            d[:, j] = spread_codes(cb, probes, int(flat[g, pos[g, j]]))
            ids.append((d * powers).sum(1))
        first.append(torch.cat(ids)[:decodes])
    decode(everyone, first)
    feats = torch.cat([cb[digits(torch.arange(n, device=dev))].flatten(1).double(),
                       torch.ones(n, 1, dtype=torch.float64, device=dev)], 1)                # (n, m*D + 1)
    for r in range(rounds):
        take = {g: (decodes - len(pairs[int(rows[g])].ids)) // (rounds - r) for g in everyone}
        active = [g for g in everyone if take[g] > 0]
        if active:
            decode(active, [_best_unseen(pairs[int(rows[g])], feats, loss, int(rows[g]), take[g], focus, ridge,
                                         chunk, n_pairs) for g in active])


def _best_unseen(pair: _Pair, feats: torch.Tensor, loss, row: int, take: int, focus: float, ridge: float,
                 chunk: int, n_pairs: int) -> torch.Tensor:
    """``(take,)`` the ids of the assignments not yet decoded with the lowest predicted loss, for one pair."""
    ids = torch.tensor(pair.ids, device=feats.device)
    x = torch.cat(pair.images)
    coef = _fit(feats[ids], x.double(), torch.cat(pair.losses).double(), focus, ridge)       # (q, N)
    predicted = []
    for s in range(0, feats.shape[0], chunk):
        images = (feats[s:s + chunk] @ coef).to(x.dtype).view(-1, *pair.shape)
        rows = torch.full((images.shape[0],), row, dtype=torch.long, device=feats.device)
        predicted.append(pair_losses(loss, images, rows, n_pairs))
    predicted = torch.cat(predicted)
    predicted[ids] = float("inf")
    return predicted.topk(take, largest=False).indices


def _trace(model, pairs: list[_Pair], start: torch.Tensor, free: torch.Tensor, t0: float, params: dict) -> SearchTrace:
    """Per pair: the start grid, then each decoded grid that beat the best so far, with costs and times."""
    k = model.codebook.shape[0]
    b, h, w = start.shape
    grids, losses, costs, times = [], [], [], []
    for i, p in enumerate(pairs):
        pos = free[i].nonzero().squeeze(1)
        powers = k ** torch.arange(len(pos), device=start.device)
        values = torch.cat(p.losses)
        keep = [0] + [t for t in range(1, len(values)) if values[t] < values[:t].min()]
        ids = torch.tensor([p.ids[t] for t in keep], device=start.device)
        g = start[i].flatten().repeat(len(keep), 1)
        g[:, pos] = ids[:, None] // powers[None] % k
        grids.append(g.view(-1, h, w).cpu())
        losses.append(values[keep].cpu())
        costs.append(torch.tensor([0.0] + [FORWARD * (t + 1) for t in keep[1:]], dtype=torch.float64))
        times.append(torch.tensor([p.times[t] for t in keep], dtype=torch.float64))
    spent = sum(len(p.ids) for p in pairs)
    n = len(pairs)
    return SearchTrace(grids=grids, losses=losses, raw_steps=[torch.tensor([0] + [1] * (len(g) - 1)) for g in grids],
                       stop_reason=["stalled" if len(p.ids) >= k ** int(free[i].sum()) else "budget" for i, p in enumerate(pairs)],
                       loop_to=[-1] * n, loop_steps=[0] * n, method="surrogate", params=params, decoded_images=spent,
                       seconds=time.perf_counter() - t0, decoder_equivalents=float(FORWARD * spent), costs=costs, times=times)

"""What a search returns: :class:`SearchTrace`, one record of the visited index grids per pair.

Every search of :mod:`vqtto.search` returns this one type, so the chapters summarise and plot
all of them alike. A trace holds, per pair, the index grids ``(T_i, h, w)`` int64 in the order
visited, their losses ``(T_i,)`` and the raw steps each change took, plus why the pair stopped
(one of :data:`STOP_REASONS`) and which search made it (one of :data:`METHODS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

__all__ = ["FORWARD", "FORWARD_BACKWARD", "METHODS", "STOP_REASONS", "SearchTrace", "join_traces"]

#: Decoder-call equivalents of decoding one image (forward), and of decoding it and taking the
#: gradient of its loss with respect to the codes (forward + backward).
FORWARD, FORWARD_BACKWARD = 1, 3

STOP_REASONS = ("loop", "stalled", "budget")

#: The ``method`` label of each search: Algorithm 1 (:func:`~vqtto.search.gradient_descent`),
#: Algorithms 2 and 3 and the top-m variant (:func:`~vqtto.search.straight_through`; its label
#: carries m, e.g. ``"top3"``), :func:`~vqtto.search.greedy_coordinate` and
#: :func:`~vqtto.search.relaxed_straight_through`, and the samplers on the first-order table
#: (:mod:`~vqtto.search.samplers`, :mod:`~vqtto.search.anneal`, :mod:`~vqtto.search.polish`,
#: :mod:`~vqtto.search.restarts`).
METHODS = ("alg1", "alg2", "alg3", "top", "greedy", "relaxed", "relaxed-annealed", "alg2-adaptive", "alg2-tabu", "gwg", "dmala", "dula", "dmala-codebook",
           "dula-codebook", "pas-sa", "screened-sa", "polish", "alg2-restarts", "prior-resample", "local",
           "relaxed-local", "surrogate")


@dataclass
class SearchTrace:
    """What a batched search did, pair by pair.

    Attributes:
        grids: per pair ``(T_i, h, w)`` int64, the distinct index grids in the order visited;
            ``grids[i][0]`` is the start grid. Algorithm 1 records every change of
            ``nearest(z)`` instead, so its grids may repeat.
        losses: per pair ``(T_i,)`` float, the loss of each of those grids.
        raw_steps: per pair ``(T_i,)`` int64, how many raw steps (repeats of a gradient step, or
            rounds of a proposer) it took to get from grid ``t-1`` to grid ``t``; 0 for the start.
        stop_reason: per pair, ``"loop"`` (the next grid had been seen before), ``"stalled"`` (no
            change within the repeat limit / no improving candidate / loss change below tol) or
            ``"budget"`` (``max_unique`` grids or the step budget reached).
        loop_to: per pair, the position in ``grids[i]`` the search returned to (-1 if never).
        loop_steps: per pair, raw steps of the step that returned there (0 if never).
        method: which search, one of :data:`METHODS` (``"top{m}"`` for the top-m variant).
        params: the search's parameters.
        decoded_images: images decoded in total (with or without gradient), all pairs together.
        decoder_equivalents: the cost in decoder-call equivalents, all pairs together: a forward
            pass of one image counts 1, a forward and backward pass 3 (:data:`FORWARD`,
            :data:`FORWARD_BACKWARD`); None where the search did not count it.
        costs: per pair ``(T_i,)`` float64, the decoder-call equivalents that pair had spent when
            each grid was recorded (0 for the start; NaN where the search did not count them).
        times: per pair ``(T_i,)`` float64, seconds since the search started when each grid was
            recorded (the wall time of the whole batch, not of the pair alone).
        seconds: wall time of the search.
        final_latents: ``(B, D, h, w)`` continuous latents at the end (Algorithms 1 to 3).
        chain_indices: the samplers only: ``(B, C, h, w)`` int64, the best grid of each of a
            pair's C chains (or independent draws) at the end, for the spread of their answers.
        continuous_losses: Algorithm 1 only: per pair, the loss of the continuous latent at
            every step (its ``losses`` are these losses at the steps where ``grids`` changed).
    """

    grids: list[torch.Tensor]
    losses: list[torch.Tensor]
    raw_steps: list[torch.Tensor]
    stop_reason: list[str]
    loop_to: list[int]
    loop_steps: list[int]
    method: str = ""
    params: dict = field(default_factory=dict)
    decoded_images: int = 0
    seconds: float = 0.0
    final_latents: torch.Tensor | None = None
    continuous_losses: list[torch.Tensor] | None = None
    decoder_equivalents: float | None = None
    costs: list[torch.Tensor] | None = None
    times: list[torch.Tensor] | None = None
    chain_indices: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.grids)

    @property
    def n_unique(self) -> torch.Tensor:
        """``(B,)`` int64: distinct grids visited (the paper's "unique traversal steps")."""
        return torch.tensor([g.shape[0] for g in self.grids], dtype=torch.long)

    @property
    def final_indices(self) -> torch.Tensor:
        """``(B, h, w)`` int64: the last distinct grid of each pair."""
        return torch.stack([g[-1] for g in self.grids])

    @property
    def final_losses(self) -> torch.Tensor:
        """``(B,)`` the loss of :attr:`final_indices`."""
        return torch.stack([l[-1] for l in self.losses])

    @property
    def best_indices(self) -> torch.Tensor:
        """``(B, h, w)`` int64: the grid of lowest loss each pair visited."""
        return torch.stack([g[l.argmin()] for g, l in zip(self.grids, self.losses)])

    @property
    def best_losses(self) -> torch.Tensor:
        """``(B,)`` the lowest loss each pair reached."""
        return torch.stack([l.min() for l in self.losses])

    @property
    def total_raw_steps(self) -> torch.Tensor:
        """``(B,)`` int64: raw steps taken in all, including a loop-closing step."""
        return torch.stack([r.sum() for r in self.raw_steps]) + torch.tensor(self.loop_steps, dtype=torch.long)

    def fraction(self, reason: str) -> float:
        """Fraction of pairs that stopped for ``reason`` (one of :data:`STOP_REASONS`)."""
        if reason not in STOP_REASONS:
            raise ValueError(f"reason must be one of {list(STOP_REASONS)}, got {reason!r}")
        return sum(r == reason for r in self.stop_reason) / max(1, len(self))

    def steps_per_change(self) -> torch.Tensor:
        """All raw-step counts of the changes of all pairs (start grids excluded), ``(N,)`` int64."""
        parts = [r[1:] for r in self.raw_steps]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def join_traces(traces: list[SearchTrace]) -> SearchTrace:
    """Traces of consecutive shares of the pairs -> one trace of all pairs, in order.

    Per-pair fields are concatenated, ``decoded_images`` summed, ``seconds`` the longest share's.
    """
    first = traces[0]

    def cat(name: str):
        parts = [getattr(t, name) for t in traces]
        if any(p is None for p in parts):
            return None
        return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else [x for p in parts for x in p]

    per_pair = ("grids", "losses", "raw_steps", "stop_reason", "loop_to", "loop_steps", "final_latents",
                "continuous_losses")
    return replace(first, **{name: cat(name) for name in per_pair},
                   decoded_images=sum(t.decoded_images for t in traces), seconds=max(t.seconds for t in traces))

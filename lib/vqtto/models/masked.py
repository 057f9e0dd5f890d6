"""A masked-token prior over VQ-VAE index grids: every position predicted from all the others.

The PixelCNN (:mod:`vqtto.models.pixelcnn`) reads a grid in raster order, so a code can only be drawn
from the codes before it. A *masked-token* model (MaskGIT, Chang et al. 2022, arXiv 2202.04200)
is bidirectional instead: some positions of a grid are replaced by a [MASK] token (id ``k``) and a
transformer predicts the codes there from every visible position, above, below, left and right.

- **Training** (:func:`masking_loss`): for each grid draw ``r ~ U(0, 1)``, hide
  ``ceil(cos(pi r / 2) * h w)`` positions chosen uniformly (MaskGIT's cosine schedule: most
  draws hide many positions, some few), and minimise the cross-entropy at the hidden ones.
- **Completion** (:func:`complete`): the movable positions start hidden; at each of ``steps``
  rounds a code is drawn at every hidden position, the most confident draws are kept and the
  rest hidden again, the number still hidden falling along the same cosine, until none is.
- **Scoring** (:func:`pseudo_nll`): such a model has no tractable likelihood. Its *pseudo*-
  likelihood, ``sum_i log p(z_i | z_-i)`` (each position hidden in turn, the rest visible), is
  what it reports: a different quantity from the PixelCNN's exact NLL, usually lower, since each
  position sees the whole rest of the grid.
- **In a search's energy** (:class:`MaskedGridPrior`): the pseudo-NLL per position with the
  interface of :class:`vqtto.search.GridPrior`.

:func:`masked_prior` gives a trained model from the cache, keyed by its full config (the
VQ-VAE's included), like :func:`vqtto.models.prior`.

Shapes: index grids ``(B, h, w)`` int64 in ``[0, k)`` (``k`` marks a hidden position in the
model's input); logits ``(B, k, h, w)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import codes
from . import TrainedPrior, _cached, _device, _payload, vqvae
from .profiles import apply_overrides, masked_prior_preset
from ..search.chains import PairRandom, pair_seeds, sample_categorical
from .training import PriorHistory, _Settings, cosine_decay, fit

__all__ = ["MaskedGridPrior", "MaskedPriorConfig", "MaskedTokenPrior", "MaskedTrainConfig", "TrainedMaskedPrior",
           "complete", "masked_metrics", "mask_schedule", "masked_prior", "masked_prior_config", "masking_loss",
           "pseudo_nll", "pseudo_nll_terms", "random_masks", "train_masked_prior"]


# --- the model -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaskedPriorConfig:
    """Architecture of a masked-token prior over ``(height, width)`` grids of ``k`` codes.

    Attributes:
        k: the codebook size; the input vocabulary has ``k + 1`` tokens (``k`` = [MASK]).
        height, width: the grid's shape (7 x 7 for Fashion-MNIST codes).
        dim: width of the token and position embeddings and of the transformer.
        layers: transformer encoder layers.
        heads: attention heads; must divide ``dim``.
        ff_mult: the feed-forward width is ``ff_mult * dim``.
        dropout: dropout inside the transformer while training, in [0, 1).
    """

    k: int = 512
    height: int = 7
    width: int = 7
    dim: int = 64
    layers: int = 3
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k (number of codes) must be an integer >= 2, got {self.k!r}")
        for name in ("height", "width", "dim", "layers", "heads", "ff_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"heads must divide dim: dim={self.dim!r} is not a multiple of heads={self.heads!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")

    @property
    def mask_id(self) -> int:
        """The [MASK] token's id, ``k``."""
        return self.k

    def as_dict(self) -> dict:
        return asdict(self)


class MaskedTokenPrior(nn.Module):
    """A bidirectional transformer predicting the code at every position of a partly hidden grid.

    Tokens ``(B, h, w)`` in ``[0, k]`` (``k`` = hidden) -> token embedding + learned position
    embedding -> ``cfg.layers`` pre-norm :class:`torch.nn.TransformerEncoderLayer` s (full
    attention, no causal mask) -> layer norm -> a linear head over the ``k`` codes.
    """

    def __init__(self, cfg: MaskedPriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.k + 1, cfg.dim)
        self.positions = nn.Parameter(torch.randn(cfg.height * cfg.width, cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ff_mult * cfg.dim, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.k)

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-probabilities ``(B, k, h, w)`` of every code at every position.

        Args:
            tokens: ``(B, h, w)`` int64 in ``[0, k]``; ``k`` marks a hidden position.
        """
        cfg = self.cfg
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (cfg.height, cfg.width):
            raise ValueError(f"tokens must be (B, {cfg.height}, {cfg.width}) int64, got {tuple(tokens.shape)}")
        out = self.head(self.features(tokens))  # (B, h*w, k)
        return out.transpose(1, 2).reshape(tokens.shape[0], cfg.k, cfg.height, cfg.width)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The normalised transformer output ``(B, h*w, dim)`` of tokens ``(B, h, w)`` (before the head)."""
        x = self.tokens(tokens.flatten(1)) + self.positions
        return self.norm(self.encoder(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits(tokens)


# --- the masking schedule and the training loss --------------------------------------------------

def mask_schedule(r: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule: the share of positions hidden at ``r`` in [0, 1], ``cos(pi r / 2)``."""
    return torch.cos(math.pi / 2 * r)


def random_masks(n: int, positions: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, positions)`` bool, True = hidden: per row ``ceil(cos(pi r / 2) * positions)`` positions
    (at least one) drawn uniformly, with ``r ~ U(0, 1)``. Draws on the CPU from ``generator``."""
    r = torch.rand(n, generator=generator)
    count = (mask_schedule(r) * positions).ceil().clamp(1, positions).long()
    order = torch.rand(n, positions, generator=generator).argsort(1).argsort(1)  # a random rank per position
    return order < count[:, None]


def masking_loss(model: MaskedTokenPrior, grids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats over the hidden positions ``hidden`` ``(B, h, w)`` bool of ``grids``
    ``(B, h, w)`` when those positions are replaced by [MASK] (a scalar)."""
    tokens = grids.masked_fill(hidden, model.cfg.mask_id)
    feats = model.features(tokens)[hidden.flatten(1)]  # (hidden positions, dim): the head runs only there
    return F.cross_entropy(model.head(feats), grids.flatten(1)[hidden.flatten(1)])


@dataclass(frozen=True)
class MaskedTrainConfig(_Settings):
    """How a masked-token prior is trained (Adam, learning rate decayed to 0 along a cosine).

    Attributes:
        epochs, batch_size, lr, seed, evals_per_epoch: the :class:`~vqtto.models.training.Loop`'s; the
            seed also draws the masks.
        train_limit / test_limit: encode and use only the first images of each split (None: all).
        val_limit: the validation curve (masked cross-entropy under fixed masks) uses the first
            ``val_limit`` test grids.
        score_limit: the final pseudo-NLL is measured on the first ``score_limit`` test grids (it
            costs ``h * w`` passes per grid).
    """

    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    evals_per_epoch: int = 4
    val_limit: int = 1000
    score_limit: int = 1000

    def __post_init__(self) -> None:
        self.loop()  # validates epochs, batch_size, lr, evals_per_epoch
        for name in ("train_limit", "test_limit", "val_limit", "score_limit"):
            value = getattr(self, name)
            optional = name in ("train_limit", "test_limit")
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1{' or None' if optional else ''}, got {value!r}")


@torch.no_grad()
def masked_nats(model: MaskedTokenPrior, grids: torch.Tensor, seed: int = 0, batch_size: int = 500) -> float:
    """The training objective on ``grids`` ``(N, h, w)`` under masks drawn with ``seed``: mean nats
    per hidden position (the same masks at every call, so a curve of it is comparable)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    hidden = random_masks(grids.shape[0], grids[0].numel(), gen).view_as(grids)
    total = count = 0.0
    for s in range(0, grids.shape[0], batch_size):
        z, m = grids[s:s + batch_size].to(model.device), hidden[s:s + batch_size].to(model.device)
        n = float(m.sum())
        total += float(masking_loss(model, z, m)) * n
        count += n
    model.train(was_training)
    return total / count


def train_masked_prior(model: MaskedTokenPrior, train, val, cfg: MaskedTrainConfig, device: torch.device,
                       progress: bool = True) -> PriorHistory:
    """Train ``model`` in place on ``train.indices`` ``(N, h, w)``; record curves on ``val.indices``.

    Each step hides a fresh :func:`random_masks` draw of every grid of the batch (from a generator
    seeded by ``cfg.seed``). The curves are in nats per *hidden* position: ``train_nats`` the
    running mean of the batch losses, ``val_nats`` :func:`masked_nats` on the first
    ``cfg.val_limit`` validation grids under fixed masks. Neither is a likelihood.
    """
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    z_val = val.indices[: cfg.val_limit]
    grid = tuple(train.indices.shape[1:])

    def loss(z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = random_masks(z.shape[0], grid[0] * grid[1], gen).view(z.shape).to(z.device)
        nats = masking_loss(model, z, hidden)
        return nats, {"nats": nats}

    c = fit(model, (train.indices,), loss, cfg.loop(), device, evaluate=lambda: {"nats": masked_nats(model, z_val)},
            lr_schedule=cosine_decay, progress=progress, desc=f"masked prior k={model.cfg.k}")
    return PriorHistory(step=c.step, epoch=c.epoch, train_nats=c.train["nats"], val_nats=c.evals["nats"],
                        seconds=c.seconds)


# --- checks ---------------------------------------------------------------------------------------

def _unwrap(prior) -> MaskedTokenPrior:
    model = getattr(prior, "model", prior)
    if not isinstance(model, MaskedTokenPrior):
        raise ValueError(f"prior must be a MaskedTokenPrior or a TrainedMaskedPrior, got {type(prior).__name__}")
    return model


def _check_grids(name: str, grids, cfg: MaskedPriorConfig) -> None:
    if not isinstance(grids, torch.Tensor) or grids.dtype != torch.int64 or grids.dim() != 3 \
            or tuple(grids.shape[1:]) != (cfg.height, cfg.width) or grids.shape[0] < 1:
        got = f"{grids.dtype} {tuple(grids.shape)}" if isinstance(grids, torch.Tensor) else type(grids).__name__
        raise ValueError(f"{name} must be (B >= 1, {cfg.height}, {cfg.width}) int64 index grids, got {got}")
    if grids.numel() and (int(grids.min()) < 0 or int(grids.max()) >= cfg.k):
        raise ValueError(f"{name} must hold codes in [0, {cfg.k}), got values in [{int(grids.min())}, {int(grids.max())}]")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# --- scoring: the pseudo-likelihood --------------------------------------------------------------

@torch.no_grad()
def _masked_one_at_a_time(model: MaskedTokenPrior, grids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(n, h*w, k)``: at each position ``p``, ``log p(. | z_-p)`` with only ``p`` hidden."""
    n, h, w = grids.shape
    cells = h * w
    eye = torch.eye(cells, dtype=torch.bool, device=model.device)
    out = []
    per = max(1, batch_size // cells)  # grids per pass
    for s in range(0, n, per):
        z = grids[s:s + per].to(model.device)
        m = z.shape[0]
        tokens = z.flatten(1)[:, None, :].expand(m, cells, cells).masked_fill(eye, model.cfg.mask_id)
        lp = F.log_softmax(model.logits(tokens.reshape(m * cells, h, w)).flatten(2), dim=1)  # (m*cells, k, cells)
        diag = lp.view(m, cells, model.cfg.k, cells).diagonal(dim1=1, dim2=3)  # (m, k, cells)
        # A copy, not a view: a view would keep every chunk's full (m*cells, k, cells) tensor alive.
        out.append(diag.transpose(1, 2).contiguous())
    return torch.cat(out)


def pseudo_nll_terms(prior, grids: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``-log p(z_p | z_-p)`` in nats at every position ``(n, h, w)`` of grids ``(n, h, w)`` int64.

    Each position is hidden in turn with every other position visible: the terms of the
    pseudo-likelihood (not of a likelihood: they do not multiply to ``p(z)``).
    ``batch_size``: grid copies per forward pass.
    """
    model = _unwrap(prior)
    _check_grids("grids", grids, model.cfg)
    was_training = model.training
    model.eval()
    lp = _masked_one_at_a_time(model, grids, batch_size)
    model.train(was_training)
    own = lp.gather(2, grids.flatten(1).to(lp.device)[..., None]).squeeze(2)
    return (-own).view_as(grids).to(grids.device)


def pseudo_nll(prior, grids: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The negative log *pseudo*-likelihood per position, ``-(1 / h w) sum_p log p(z_p | z_-p)``, in nats,
    of each grid ``(n, h, w)`` int64 -> ``(n,)``.

    A masked-token model has no tractable likelihood; this is its pseudo-likelihood (Besag 1975),
    each position predicted from all the others. It is not comparable as a likelihood to the
    PixelCNN's NLL (each term conditions on more), only as "how well the codes fit each other".
    """
    return pseudo_nll_terms(prior, grids, batch_size).flatten(1).mean(1)


@torch.no_grad()
def masked_metrics(prior, grids: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Test metrics of a masked prior on grids ``(N, h, w)``: ``pseudo_nats_per_position`` (mean
    :func:`pseudo_nll`), ``masked_nats`` (the training objective under fixed masks), ``uniform_nats`` (log k)."""
    model = _unwrap(prior)
    return {"pseudo_nats_per_position": float(pseudo_nll(model, grids, batch_size).mean()),
            "masked_nats": masked_nats(model, grids), "uniform_nats": math.log(model.cfg.k)}


# --- completion: iterative parallel decoding ------------------------------------------------------

def _check_completion(model: MaskedTokenPrior, start, movable, samples, steps, temperature) -> torch.Tensor:
    _check_grids("start", start, model.cfg)
    b, h, w = start.shape
    if not isinstance(movable, torch.Tensor) or movable.dtype != torch.bool or movable.shape not in ((b, h, w), (h, w)):
        got = f"{movable.dtype} {tuple(movable.shape)}" if isinstance(movable, torch.Tensor) else type(movable).__name__
        raise ValueError(f"movable must be a bool tensor (B, h, w) = {(b, h, w)} or (h, w) = {(h, w)}, got {got}")
    _check_int("samples", samples, 1)
    _check_int("steps", steps, 1)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return movable.expand(b, h, w)


def _still_hidden(total: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """How many of ``total`` ``(n,)`` movable positions stay hidden after round ``step`` (0-based)."""
    return (mask_schedule(torch.tensor((step + 1) / steps)) * total).floor().long()


@torch.no_grad()
def complete(prior, start: torch.Tensor, movable: torch.Tensor, *, samples: int = 32, steps: int = 8,
             temperature: float = 1.0, seed: int | Sequence[int] = 0) -> torch.Tensor:
    """``samples`` completions per pair of the movable positions of ``start``, conditioned on all the rest.

    Iterative parallel decoding (MaskGIT): the movable positions start hidden. In each of ``steps``
    rounds the model draws a code at every hidden position (logits divided by ``temperature``);
    the draws are ranked by their log-probability plus Gumbel noise that fades over the rounds,
    and all but the ``floor(cos(pi/2 * (t+1)/steps) * m)`` least confident of them are kept
    (``m``: the pair's movable count; at least one is kept per round), so every position is
    filled after ``steps`` rounds (or fewer).

    Args:
        prior: a :class:`MaskedTokenPrior` (or :class:`TrainedMaskedPrior`).
        start: ``(B, h, w)`` int64, the codes kept at the frozen positions.
        movable: ``(B, h, w)`` or ``(h, w)`` bool, True where a code is drawn.
        samples: S completions per pair.
        steps: decoding rounds >= 1.
        temperature: > 0.
        seed: an int, or one int per pair; each pair draws from its own generator
            (:class:`~vqtto.search.chains.PairRandom`), so a pair gets the same completions
            batched or alone (given the same per-pair seed, see :func:`~vqtto.search.chains.pair_seeds`).

    Returns:
        ``(B, S, h, w)`` int64 on ``start``'s device; equal to ``start`` wherever ``movable`` is False.
    """
    model = _unwrap(prior)
    movable = _check_completion(model, start, movable, samples, steps, temperature)
    b, h, w = start.shape
    seeds = pair_seeds(seed, b)
    was_training = model.training
    model.eval()
    dev = model.device
    rand = PairRandom(seeds, samples, dev)
    rows = torch.arange(b * samples, device=dev)
    grids = start.to(dev).repeat_interleave(samples, 0).flatten(1)  # (n, h*w)
    hidden = movable.to(dev).repeat_interleave(samples, 0).flatten(1).clone()
    total = hidden.sum(1)
    for t in range(steps):
        if not bool(hidden.any()):
            break
        tokens = grids.masked_fill(hidden, model.cfg.mask_id).view(-1, h, w)
        at = hidden.nonzero(as_tuple=True)  # only the hidden positions are drawn: the head runs there alone
        logits = model.head(model.features(tokens)[at]).double() / temperature  # (m, k), m hidden positions
        u = rand.uniform(rows, h * w).double()
        draw = grids.clone()
        draw[at] = sample_categorical(logits, u[at])
        gumbel = -torch.log(-torch.log(rand.uniform(rows, h * w).double()))
        conf = torch.full(gumbel.shape, math.inf, dtype=gumbel.dtype, device=dev)
        conf[at] = logits.log_softmax(-1).gather(1, draw[at][:, None]).squeeze(1) + (1 - (t + 1) / steps) * gumbel[at]
        now = hidden.sum(1)
        keep_hidden = torch.minimum(_still_hidden(total, t, steps), (now - 1).clamp_min(0))
        rank = conf.masked_fill(~hidden, math.inf).argsort(1).argsort(1)  # 0 = least confident hidden
        reveal = hidden & (rank >= keep_hidden[:, None])
        grids = torch.where(reveal, draw, grids)
        hidden = hidden & ~reveal
    model.train(was_training)
    return grids.view(b, samples, h, w).to(start.device)


# --- in a search's energy -------------------------------------------------------------------------

class MaskedGridPrior:
    """``lambda`` times a masked prior's pseudo-NLL per position: the :class:`vqtto.search.GridPrior`
    interface (``weight``, ``positions``, ``nll``, ``penalty``, ``penalty_table``), so the searches
    take it as ``prior=``.

    :meth:`penalty_table` is first-order like the PixelCNN's: moving position ``p`` to code ``j``
    changes the penalty by about ``lambda / (h w) * (log p(x_p | x_-p) - log p(j | x_-p))``, the
    exact change of position ``p``'s own term; it ignores that the move also changes the terms of
    the other positions, which see ``p``. Every grid a search actually proposes is scored in full.

    Args:
        prior: a :class:`MaskedTokenPrior` (or :class:`TrainedMaskedPrior`) over the model's codes.
        weight: ``lambda`` >= 0.
        k, grid: the searched model's codebook size and ``(h, w)``; must be the prior's.

    Raises:
        ValueError: for another kind of prior, another k or grid, or a weight that is negative or
            not finite.
    """

    def __init__(self, prior, weight: float, k: int, grid: tuple[int, int], batch_size: int = 1024) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"lambda (prior weight) must be a finite number >= 0, got {weight!r}")
        model = _unwrap(prior)
        cfg = model.cfg
        if cfg.k != k:
            raise ValueError(f"prior was trained for k={cfg.k} codes but the searched model has k={k}")
        if (cfg.height, cfg.width) != tuple(grid):
            raise ValueError(f"prior was trained on {cfg.height}x{cfg.width} grids but the searched model's grids are "
                             f"{grid[0]}x{grid[1]}")
        self.prior, self.weight, self.positions, self.batch_size = model, float(weight), grid[0] * grid[1], batch_size

    def nll(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` int64 -> ``(n,)`` negative log pseudo-likelihood in nats per position."""
        return pseudo_nll(self.prior, idx, self.batch_size)

    def penalty(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` int64 -> ``(n,)`` the energy's prior term, ``lambda * nll``."""
        if self.weight == 0:
            return torch.zeros(idx.shape[0], device=idx.device)
        return self.weight * self.nll(idx)

    def penalty_table(self, idx: torch.Tensor) -> torch.Tensor:
        """Grids ``(n, h, w)`` -> ``(n, h*w, k)``: the first-order change of :meth:`penalty` for each single
        move (exact for the moved position's own term, see the class docstring)."""
        n = idx.shape[0]
        if self.weight == 0:
            return torch.zeros(n, self.positions, self.prior.cfg.k, device=idx.device)
        _check_grids("idx", idx, self.prior.cfg)
        was_training = self.prior.training
        self.prior.eval()
        lp = _masked_one_at_a_time(self.prior, idx, self.batch_size).to(idx.device)  # (n, h*w, k)
        self.prior.train(was_training)
        cur = lp.gather(2, idx.flatten(1)[..., None])
        return (self.weight / self.positions) * (cur - lp)

    def __repr__(self) -> str:
        return f"MaskedGridPrior(lambda={self.weight:g}, k={self.prior.cfg.k})"


# --- a trained one from the cache -----------------------------------------------------------------

#: A trained masked prior is held like the PixelCNN: model, curves, test metrics, config, its VQ-VAE and grids.
TrainedMaskedPrior = TrainedPrior


def masked_prior_config(vqvae_config: dict, profile: str = "quick", grid: tuple[int, int] = (7, 7),
                        **overrides: Any) -> dict:
    """The full configuration of a masked prior: the VQ-VAE's config, the profile's presets, ``overrides``
    (any :class:`MaskedPriorConfig` field but k, height, width, or :class:`MaskedTrainConfig` field)."""
    preset = masked_prior_preset(profile)
    model_fields = set(MaskedPriorConfig.__dataclass_fields__) - {"k", "height", "width"}
    apply_overrides(preset, overrides, model_fields, set(MaskedTrainConfig.__dataclass_fields__), "masked prior")
    model = MaskedPriorConfig(k=vqvae_config["model"]["k"], height=grid[0], width=grid[1], **preset["model"])
    train = MaskedTrainConfig(**preset["train"])
    return {"vqvae": vqvae_config, "model": model.as_dict(), "train": train.as_dict()}


def masked_prior(dataset: str = "fashion-mnist", k: int = 512, profile: str = "quick",
                 device: torch.device | str = "auto", progress: bool = True, vqvae_options: dict | None = None,
                 **overrides: Any) -> TrainedMaskedPrior:
    """A masked-token prior over the codes of ``vqvae(dataset, k, profile)``, from the cache.

    The VQ-VAE and the encoded splits come from the cache (built if absent); the prior is trained
    with a progress bar and cached under its full config (the VQ-VAE's included). Its ``test``
    metrics are :func:`masked_metrics` on the first ``score_limit`` test grids.

    Args:
        vqvae_options: keyword options for :func:`vqtto.models.vqvae`.
        overrides: :class:`MaskedPriorConfig` / :class:`MaskedTrainConfig` fields, e.g. ``layers=2``.
    """
    device = _device(device)
    vq = vqvae(dataset, k=k, profile=profile, device=device, progress=progress, **(vqvae_options or {}))
    limits = masked_prior_config(vq.config, profile, **overrides)["train"]
    train = codes.index_dataset(vq, "train", limit=limits["train_limit"], device=device, progress=progress)
    test = codes.index_dataset(vq, "test", limit=limits["test_limit"], device=device, progress=progress)
    config = masked_prior_config(vq.config, profile, grid=train.grid_shape, **overrides)
    train_cfg = MaskedTrainConfig(**config["train"])

    def make() -> MaskedTokenPrior:
        return MaskedTokenPrior(MaskedPriorConfig(**config["model"]))

    def build() -> dict:
        torch.manual_seed(train_cfg.seed)
        model = make()
        hist = train_masked_prior(model, train, test, train_cfg, device, progress=progress)
        return _payload(model, hist, masked_metrics(model, test.indices[: train_cfg.score_limit]))

    model, payload = _cached("masked-prior", config, build, make, device)
    return TrainedMaskedPrior(model=model, history=PriorHistory(**payload["history"]), test=payload["test"],
                              config=config, vqvae=vq, train_codes=train, test_codes=test)

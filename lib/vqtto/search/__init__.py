"""Test-time search in the discrete latent space of a VQ-VAE (paper section 5.2, appendix A.4).

Every search works on a *latent decoder*: any object with ``codebook`` ``(k, D)``,
``nearest(z (B, D, h, w)) -> (B, h, w)`` int64, ``lookup(idx (B, h, w)) -> (B, D, h, w)`` and
``decode(codes) -> (B, C, H, W)`` (:class:`vqtto.models.autoencoder.VQVAE` is one). A search starts from
continuous latents ``z_start`` ``(B, D, h, w)`` (usually the encoder's output for B source
images) and minimises a per-pair loss ``images (B, C, H, W) -> (B,)`` (see
:mod:`vqtto.search.losses`, re-exported here: ``search.mse_to`` etc.). All searches are batched:
the B pairs advance together, each with its own hash set and stop state, and finished pairs cost
no further decoder calls. They all run on one driver and return one :class:`SearchTrace`.

Modules, one concept each:

- :mod:`~vqtto.search.trace`: :class:`SearchTrace`, :data:`STOP_REASONS`, :data:`METHODS`.
- :mod:`~vqtto.search.driver`: argument checks, :func:`pair_losses`, :class:`Evaluator`,
  :class:`Recorder`, :func:`drive` and the proposer statuses.
- :mod:`~vqtto.search.voronoi`: :func:`nearest_exact`, :func:`position_steps`,
  :func:`steps_to_change` (how many repeats of a step leave a Voronoi cell).
- :mod:`~vqtto.search.continuous`: Algorithm 1, :func:`gradient_descent` (``"alg1"``).
- :mod:`~vqtto.search.straight`: Algorithms 2 and 3, :func:`straight_through` (``"alg2"``,
  ``"alg3"``, ``"top{m}"``) and :func:`mask_gradient`.
- :mod:`~vqtto.search.greedy`: :func:`greedy_coordinate` (``"greedy"``, ours).
- :mod:`~vqtto.search.relaxed`: :func:`relaxed_straight_through` (``"relaxed"``, ours).
- :mod:`~vqtto.search.yardsticks`: :func:`quantized_losses`, :func:`reference_losses` (the loss
  of the target's own code) and :func:`relative_losses`.
- :mod:`~vqtto.search.first_order`: :func:`first_order_table` (the predicted loss change of every
  single-position move, from one backward pass), :func:`linearisation_check`, :func:`best_moves`,
  :func:`apply_moves`.
- :mod:`~vqtto.search.chains`: :class:`ChainSearch`, B pairs x C chains as one batch under
  :func:`drive`, with per-pair random streams and budgets in decoder-call equivalents.
- :mod:`~vqtto.search.samplers`: :func:`gibbs_with_gradients` (``"gwg"``) and
  :func:`discrete_langevin` (``"dmala"``, ``"dula"``).
- :mod:`~vqtto.search.anneal`: :func:`path_annealing` (``"pas-sa"``) and
  :func:`screened_annealing` (``"screened-sa"``).
- :mod:`~vqtto.search.polish`: :func:`screened_polish` (``"polish"``).
- :mod:`~vqtto.search.local`: :func:`exact_local_search` (``"local"``): batches of single moves
  screened by a trust-region score (the table plus a fitted curvature term on the code
  distance), decoded exactly, the best taken and the improving ones combined; and
  :func:`relaxed_then_local` (``"relaxed-local"``): the relaxed search, then this from its best grid.
- :mod:`~vqtto.search.restarts`: :func:`restarted_straight_through` (``"alg2-restarts"``).
- :mod:`~vqtto.search.subproblems`: :func:`enumerate_subproblem` (exact optima with m free
  positions), :func:`free_positions`, :func:`free_mask`, :func:`optimum_rate`.
- :mod:`~vqtto.search.surrogate`: :func:`surrogate_screen` (``"surrogate"``), for a few free
  positions: a linear image model fitted to decodes (weighted towards low loss) predicts every
  assignment, the best predicted are decoded, refitted over rounds; :func:`spread_codes`.
- :mod:`~vqtto.search.certificate`: :func:`radius1_certificate`.
- :mod:`~vqtto.search.fusion`: :func:`fuse_by_region`, one grid from several runs, each position's
  code from the run whose image is right over that position's receptive field; :func:`pixel_residuals`.
- :mod:`~vqtto.search.coordinate`: :func:`exact_coordinate`, a reference on few free positions:
  every single move decoded, then every product of each position's best ``top`` codes.
- :mod:`~vqtto.search.energy`: :class:`GridPrior`, the PixelCNN term ``lambda * NLL`` a sampler
  adds to its loss (``prior=``); the samplers also take ``radius=`` (a Hamming ball).
- :mod:`~vqtto.search.prior_resampling`: :func:`prior_resample` (``"prior-resample"``), the
  prior-only baseline: complete the movable positions from the PixelCNN, keep the best draw.
- :mod:`~vqtto.search.registry`: :data:`REGISTRY`, every search offered by id (its function, the
  arguments the id fixes, what it supports, how a budget becomes its arguments) and
  :data:`DEFAULT`, the book's best measured method.

Costs: every search counts decoder-call equivalents (:data:`FORWARD` = 1 per image decoded,
:data:`FORWARD_BACKWARD` = 3 per image decoded with its gradient) in
:attr:`SearchTrace.decoder_equivalents`, and per grid in :attr:`SearchTrace.costs`.
"""

from .losses import LossFn, PairLoss, downscale, downscaled_mse_to, masked_mse_to, mse_to
from .continuous import gradient_descent
from .driver import (BUDGET, MOVED, RETRY, REVISITS, STALLED, Evaluate, Evaluator, Proposer, Recorder, check_positive,
    check_start, drive, pair_losses)
from .greedy import greedy_coordinate
from .relaxed import ball_argmax, relaxed_straight_through
from .straight import MASKS, mask_gradient, straight_through
from .trace import FORWARD, FORWARD_BACKWARD, METHODS, STOP_REASONS, SearchTrace, join_traces
from .voronoi import nearest_exact, position_steps, steps_to_change
from .yardsticks import quantized_losses, reference_losses, relative_losses
from .first_order import apply_moves, best_moves, best_per_position, first_order_table, linearisation_check
from .chains import ChainSearch, PairRandom, merge_chains, movable_mask, pair_seeds, sample_categorical
from .samplers import DISTANCES, discrete_langevin, gibbs_with_gradients
from .anneal import path_annealing, screened_annealing
from .polish import screened_polish
from .energy import GridPrior
from .prior_resampling import prior_resample
from .restarts import restarted_straight_through
from .surrogate import spread_codes, surrogate_screen
from .subproblems import MAX_GRIDS, Subproblem, enumerate_subproblem, free_mask, free_positions, optimum_rate
from .certificate import Certificate, radius1_certificate
from .local import exact_local_search, relaxed_then_local
from .coordinate import CoordinateResult, exact_coordinate
from .fusion import fuse_by_region, pixel_residuals
from . import registry
from .registry import DEFAULT, REGISTRY, MethodSpec

__all__ = [
    # losses (from vqtto.search.losses)
    "LossFn", "PairLoss", "downscale", "downscaled_mse_to", "masked_mse_to", "mse_to",
    # the searches
    "gradient_descent", "straight_through", "mask_gradient", "MASKS", "greedy_coordinate", "relaxed_straight_through",
    # the samplers on the first-order table, and the baseline with restarts
    "gibbs_with_gradients", "discrete_langevin", "DISTANCES", "path_annealing", "screened_annealing",
    "screened_polish", "restarted_straight_through", "fuse_by_region", "pixel_residuals",
    # exact local search on single moves, alone and after the relaxed search
    "exact_local_search", "relaxed_then_local",
    "first_order_table", "linearisation_check", "best_moves", "best_per_position", "apply_moves",
    "ChainSearch", "PairRandom", "merge_chains", "movable_mask", "pair_seeds", "sample_categorical",
    # exact references
    "MAX_GRIDS", "Subproblem", "enumerate_subproblem", "free_mask", "free_positions", "optimum_rate",
    "Certificate", "radius1_certificate", "CoordinateResult", "exact_coordinate", "surrogate_screen", "spread_codes",
    # the prior in the search, and the prior alone
    "GridPrior", "prior_resample", "ball_argmax",
    # what they return
    "METHODS", "STOP_REASONS", "SearchTrace", "join_traces", "FORWARD", "FORWARD_BACKWARD",
    # geometry
    "nearest_exact", "position_steps", "steps_to_change",
    # yardsticks
    "quantized_losses", "reference_losses", "relative_losses",
    # the driver, for writing another search
    "BUDGET", "MOVED", "RETRY", "STALLED", "REVISITS", "Evaluate", "Evaluator", "Proposer", "Recorder",
    "check_positive", "check_start", "drive", "pair_losses",
    # searches by id
    "registry", "DEFAULT", "REGISTRY", "MethodSpec",
]

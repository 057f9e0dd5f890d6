"""Test-time search in the discrete latent space of a VQ-VAE (paper section 5.2, appendix A.4).

Every search works on a *latent decoder*: any object with ``codebook`` ``(k, D)``,
``nearest(z (B, D, h, w)) -> (B, h, w)`` int64, ``lookup(idx (B, h, w)) -> (B, D, h, w)`` and
``decode(codes) -> (B, C, H, W)`` (:class:`vqtto.vqvae.VQVAE` is one). A search starts from
continuous latents ``z_start`` ``(B, D, h, w)`` (usually the encoder's output for B source
images) and minimises a per-pair loss ``images (B, C, H, W) -> (B,)`` (see
:mod:`vqtto.constraints`, re-exported here: ``search.mse_to`` etc.). All searches are batched:
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
"""

from ..constraints import LossFn, PairLoss, downscale, downscaled_mse_to, masked_mse_to, mse_to
from .continuous import gradient_descent
from .driver import (BUDGET, MOVED, RETRY, REVISITS, STALLED, Evaluate, Evaluator, Proposer, Recorder, check_positive,
                     check_start, drive, pair_losses)
from .greedy import greedy_coordinate
from .relaxed import relaxed_straight_through
from .straight import MASKS, mask_gradient, straight_through
from .trace import METHODS, STOP_REASONS, SearchTrace
from .voronoi import nearest_exact, position_steps, steps_to_change
from .yardsticks import quantized_losses, reference_losses, relative_losses

__all__ = [
    # losses (from vqtto.constraints)
    "LossFn", "PairLoss", "downscale", "downscaled_mse_to", "masked_mse_to", "mse_to",
    # the searches
    "gradient_descent", "straight_through", "mask_gradient", "MASKS", "greedy_coordinate", "relaxed_straight_through",
    # what they return
    "METHODS", "STOP_REASONS", "SearchTrace",
    # geometry
    "nearest_exact", "position_steps", "steps_to_change",
    # yardsticks
    "quantized_losses", "reference_losses", "relative_losses",
    # the driver, for writing another search
    "BUDGET", "MOVED", "RETRY", "STALLED", "REVISITS", "Evaluate", "Evaluator", "Proposer", "Recorder",
    "check_positive", "check_start", "drive", "pair_losses",
]

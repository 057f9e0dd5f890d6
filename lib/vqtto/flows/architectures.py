"""The flows compared on the toy targets, built from normflows' coupling blocks: the paper's flow
in R^k, the flow onto the simplex, and its ablation without the temperature."""

from __future__ import annotations

import normflows as nf
import torch

from .gumbel import GumbelSoftmax
from .densities import FormulaTarget, LogOrthantTarget, LogSimplexTarget, LogSoftmaxZero


OPTIMIZERS = ("adam", "sgd-nesterov")
# The flows compared on the toy targets: the paper's flow in R^k, the flow onto the simplex, and the
# flow onto the simplex without the temperature inside its softmax bijection (an ablation).
FLOW_KINDS = ("paper", "simplex", "simplex-untempered")


# --- the two flows for one simplex ----------------------------------------------------------

def _coupling_stack(dim: int, n_blocks: int, hidden: int) -> list[nf.flows.Flow]:
    """``n_blocks`` x (normflows AffineCouplingBlock with an MLP conditioner, then a swap)."""
    if dim < 2:
        raise ValueError(f"a coupling flow needs dimension >= 2, got {dim}")
    first, second = (dim + 1) // 2, dim // 2  # sizes of torch.chunk(2) halves
    layers: list[nf.flows.Flow] = []
    for _ in range(n_blocks):
        net = nf.nets.MLP([first, hidden, hidden, 2 * second], init_zeros=True)
        layers += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(dim, mode="swap")]
    return layers


def _base(dim: int, mean: float) -> nf.distributions.DiagGaussian:
    base = nf.distributions.DiagGaussian(dim, trainable=False)
    base.loc.fill_(float(mean))
    return base


def _check_flow_args(k: int, n_blocks: int, hidden: int) -> None:
    if not isinstance(k, int) or k < 3:
        raise ValueError(f"k (number of classes) must be an int >= 3 for these flows, got {k!r}")
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks!r}")
    if hidden < 1:
        raise ValueError(f"hidden (MLP width) must be >= 1, got {hidden!r}")


def paper_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64, base_mean: float = 0.0,
               literal: bool = False) -> nf.NormalizingFlow:
    """The paper's flow: Gaussian in R^k -> ``n_blocks`` coupling blocks -> R^k.

    The target is the Gumbel-softmax formula read in log-coordinates (:class:`LogOrthantTarget`),
    or with ``literal=True`` at the point itself (:class:`FormulaTarget`). The couplings start as
    the identity (zero last layers, normflows' ``init_zeros``), so the first samples are the base's.
    """
    _check_flow_args(gs.k, n_blocks, hidden)
    target = FormulaTarget(gs) if literal else LogOrthantTarget(gs)
    return nf.NormalizingFlow(_base(gs.k, base_mean), _coupling_stack(gs.k, n_blocks, hidden), target)


def simplex_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64, base_mean: float = 0.0) -> nf.NormalizingFlow:
    """Gaussian in R^(k-1) -> coupling blocks -> :class:`LogSoftmaxZero` (at the target's ``tau``) -> ``log y``."""
    _check_flow_args(gs.k, n_blocks, hidden)
    layers = _coupling_stack(gs.k - 1, n_blocks, hidden) + [LogSoftmaxZero(gs.tau)]
    return nf.NormalizingFlow(_base(gs.k - 1, base_mean), layers, LogSimplexTarget(gs))


def untempered_simplex_flow(gs: GumbelSoftmax, n_blocks: int = 16, hidden: int = 64,
                            base_mean: float = 0.0) -> nf.NormalizingFlow:
    """:func:`simplex_flow` with ``tau = 1`` in its last layer: the softmax of ``(u, 0)`` itself.

    The target keeps its temperature; the coupling blocks must learn the ``1/tau`` scale themselves.
    """
    flow = simplex_flow(gs, n_blocks, hidden, base_mean)
    flow.flows[-1].tau = 1.0
    return flow


def build_flow(kind: str, gs: GumbelSoftmax, n_blocks: int, hidden: int, base_mean: float) -> nf.NormalizingFlow:
    """``kind`` in :data:`FLOW_KINDS` -> :func:`paper_flow`, :func:`simplex_flow` or :func:`untempered_simplex_flow`."""
    builders = {"paper": paper_flow, "simplex": simplex_flow, "simplex-untempered": untempered_simplex_flow}
    if kind not in builders:
        raise ValueError(f"flow kind must be one of {FLOW_KINDS}, got {kind!r}")
    return builders[kind](gs, n_blocks, hidden, base_mean)

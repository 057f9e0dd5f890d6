"""The Gumbel-softmax distribution: samples, density, limits, agreement with torch."""

import math

import pytest
import torch

from vqtto.flows.gumbel import GumbelSoftmax, zipf_probs


def test_samples_lie_on_the_open_simplex():
    gs = GumbelSoftmax(zipf_probs(6), tau=0.5)
    y = gs.sample(500, generator=torch.Generator().manual_seed(0))
    assert y.shape == (500, 6)
    assert (y >= 0).all()
    assert torch.allclose(y.sum(-1), torch.ones(500), atol=1e-5)
    log_y = gs.sample_log(500, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.logsumexp(log_y, -1), torch.zeros(500), atol=1e-5)


def test_density_integrates_to_one_for_k2():
    gs = GumbelSoftmax(torch.tensor([0.2, 0.8]), tau=1.5)
    y1 = torch.linspace(1e-7, 1 - 1e-7, 200_001, dtype=torch.float64)
    density = gs.log_prob(torch.stack([y1, 1 - y1], -1)).exp()
    assert abs(float(torch.trapz(density, y1)) - 1) < 2e-3


def test_density_integrates_to_one_for_k3_in_the_first_two_coordinates():
    gs = GumbelSoftmax(torch.tensor([0.2, 0.3, 0.5]), tau=1.0)
    n = 1200
    g = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # midpoint rule on the unit square
    a, b = torch.meshgrid(g, g, indexing="ij")
    inside = a + b < 1
    pts = torch.stack([a[inside], b[inside], 1 - a[inside] - b[inside]], -1)
    total = float(gs.log_prob(pts).exp().sum()) / n**2
    assert abs(total - 1) < 1e-2


def test_small_tau_gives_one_hots_with_frequencies_pi():
    probs = torch.tensor([0.5, 0.3, 0.2])
    gs = GumbelSoftmax(probs, tau=0.01)
    y = gs.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert (y.max(-1).values > 0.99).float().mean() > 0.97
    freq = torch.bincount(y.argmax(-1), minlength=3).float() / len(y)
    assert torch.allclose(freq, probs, atol=0.015)


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.0])
def test_log_prob_agrees_with_torch_relaxed_one_hot(tau):
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    ref = torch.distributions.RelaxedOneHotCategorical(torch.tensor(tau, dtype=torch.float64), probs=probs)
    y = ref.sample((50,))
    ours = GumbelSoftmax(probs, tau).log_prob(y)
    assert torch.allclose(ours, ref.log_prob(y), atol=1e-8)


def test_log_space_density_stays_finite_where_coordinates_underflow():
    gs = GumbelSoftmax(zipf_probs(40), tau=0.05)
    log_y = gs.sample_log(200, generator=torch.Generator().manual_seed(2))
    assert (log_y.exp() == 0).any()  # the linear-space coordinates underflow ...
    assert torch.isfinite(gs.log_prob_log(log_y)).all()  # ... the log-space density does not


def test_log_prob_refuses_points_off_the_simplex():
    gs = GumbelSoftmax(torch.tensor([0.5, 0.5]), tau=1.0)
    with pytest.raises(ValueError, match="simplex"):
        gs.log_prob(torch.tensor([[0.7, 0.7]]))
    with pytest.raises(ValueError, match="simplex"):
        gs.log_prob(torch.tensor([[1.2, -0.2]]))


def test_formula_off_the_simplex_is_nan_or_homogeneous_of_degree_minus_k():
    k = 3
    gs = GumbelSoftmax(torch.tensor([0.2, 0.3, 0.5]), tau=0.1)
    assert torch.isnan(gs.formula_anywhere(torch.tensor([[1.2, -0.1, -0.1]]))).all()
    y = gs.sample(4, generator=torch.Generator().manual_seed(0)).double()
    for c in (0.1, 3.0):
        shifted = gs.formula_anywhere(c * y)
        assert torch.allclose(shifted, gs.formula_anywhere(y) - k * math.log(c), atol=1e-6)


def test_categorical_log_prob_per_position():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    gs = GumbelSoftmax(probs, tau=1.0)
    idx = torch.tensor([[1, 1], [0, 0]])
    expected = torch.log(torch.tensor([[0.5, 0.1], [0.5, 0.9]]))
    assert torch.allclose(gs.log_prob_categorical(idx), expected)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("inf")])
def test_bad_tau_is_refused(tau):
    with pytest.raises(ValueError, match="tau"):
        GumbelSoftmax(torch.tensor([0.5, 0.5]), tau)


def test_bad_probs_are_refused():
    with pytest.raises(ValueError, match="probs"):
        GumbelSoftmax(torch.tensor([0.5, 0.0]), 1.0)

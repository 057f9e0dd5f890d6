"""Flows onto Gumbel-softmax targets, the divergence bookkeeping and the PULSE-style search."""

import math

import pytest
import torch
from torch import nn

from vqtto import flows
from vqtto.gumbel import GumbelSoftmax, zipf_probs
from vqtto.vqvae import VQVAE, VQVAEConfig


@pytest.mark.parametrize("k,tau", [(3, 1.0), (4, 0.3), (5, 0.1)])
def test_softmax_bijection_log_det_matches_autograd(k, tau):
    layer = flows.LogSoftmaxZero(tau)
    u = torch.randn(3, k - 1, dtype=torch.float64)
    _, log_det = layer(u)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0, :-1].exp(), u[b])
        assert torch.allclose(log_det[b], torch.linalg.slogdet(jac).logabsdet, atol=1e-8)


def test_softmax_bijection_inverts():
    layer = flows.LogSoftmaxZero(0.2)
    u = torch.randn(5, 6, dtype=torch.float64)
    log_y, ld = layer(u)
    back, ld_inv = layer.inverse(log_y)
    assert torch.allclose(back, u, atol=1e-10)
    assert torch.allclose(ld, -ld_inv)


def test_simplex_flow_density_integrates_to_one_over_the_simplex():
    torch.manual_seed(0)
    flow = flows.simplex_flow(GumbelSoftmax(torch.tensor([0.2, 0.3, 0.5]), tau=0.7), n_blocks=2, hidden=8).double()
    for p in flow.parameters():  # leave the zero initialisation so the couplings do something
        nn.init.normal_(p, std=0.3)
    n = 600
    g = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    a, b = torch.meshgrid(g, g, indexing="ij")
    inside = a + b < 1
    y = torch.stack([a[inside], b[inside], 1 - a[inside] - b[inside]], -1)
    with torch.no_grad():
        total = float(flow.log_prob(y.log()).exp().sum()) / n**2
    assert abs(total - 1) < 2e-2


def test_simplex_flow_samples_are_on_the_simplex_and_paper_flow_samples_are_not():
    gs = GumbelSoftmax(zipf_probs(5), tau=0.1)
    log_y, _ = flows.simplex_flow(gs, n_blocks=2, hidden=8).sample(100)
    assert torch.allclose(torch.logsumexp(log_y, -1), torch.zeros(100), atol=1e-5)
    fall = flows.where_samples_fall(flows.paper_flow(gs, n_blocks=2, hidden=8), n=2000)
    assert fall["nan"] > 0.9 and fall["on_simplex"] == 0.0
    shifted = flows.where_samples_fall(flows.paper_flow(gs, n_blocks=2, hidden=8, base_mean=5.0), n=2000)
    assert shifted["off_simplex_finite"] > 0.99


def test_paper_flow_divergence_is_recorded_not_raised():
    gs = GumbelSoftmax(zipf_probs(4), tau=0.1)
    run = flows.train_reverse_kld(flows.paper_flow(gs, n_blocks=2, hidden=8), steps=20, batch=64)
    assert run.diverged and run.diverged_at == 0 and run.reason == "non-finite loss"
    assert run.final_kl is None and run.losses == []


class _InfiniteGradient(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(1.0))

    def reverse_kld(self, num_samples=1):
        return torch.sqrt(self.p - self.p.detach())  # value 0, gradient +inf


def test_non_finite_gradient_is_recorded_with_its_step():
    run = flows.train_reverse_kld(_InfiniteGradient(), steps=5, batch=1)
    assert run.diverged_at == 0 and run.reason == "non-finite gradient"


def test_simplex_flow_training_lowers_the_reverse_kl():
    gs = GumbelSoftmax(zipf_probs(4), tau=0.1)
    torch.manual_seed(0)
    flow = flows.simplex_flow(gs, n_blocks=2, hidden=16)
    with torch.no_grad():
        before = float(flow.reverse_kld(8192))
    run = flows.train_reverse_kld(flow, steps=60, batch=64, optimizer="adam", lr=5e-3, n_eval=8192)
    assert not run.diverged and len(run.losses) == 60
    assert run.final_kl < 0.6 * before
    assert run.final_kl > -0.05  # a true KL is >= 0 up to Monte Carlo noise


def test_grid_flow_is_independent_across_positions_and_its_log_det_is_exact():
    torch.manual_seed(0)
    flow = flows.GridSimplexFlow(positions=2, k=3, tau=0.5, n_blocks=2, hidden=8).double()
    for p in flow.parameters():
        nn.init.normal_(p, std=0.3)
    z = torch.randn(1, 2, 2, dtype=torch.float64)
    _, log_det = flow(z)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 2, 2))[0][0, :, :-1].exp().reshape(-1),
                                             z.reshape(-1))
    assert torch.allclose(log_det[0], torch.linalg.slogdet(jac).logabsdet, atol=1e-8)
    assert torch.count_nonzero(jac[:2, 2:]) == 0 and torch.count_nonzero(jac[2:, :2]) == 0


def test_fit_code_categorical_counts_per_position():
    idx = torch.tensor([[[0, 1]], [[0, 2]], [[0, 2]]])  # (N=3, h=1, w=2)
    probs = flows.fit_code_categorical(idx, k=3, pseudocount=1.0)
    assert torch.allclose(probs, torch.tensor([[4, 1, 1], [1, 2, 3]], dtype=torch.float) / 6)


def test_sphere_projection_radius():
    z = flows.sphere(torch.randn(4, 3, 5))
    assert torch.allclose(z.flatten(1).norm(dim=1), torch.full((4,), math.sqrt(15.0)))


def test_pulse_search_returns_the_best_argmax_grid_and_its_loss():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(k=5, hidden=8, embedding_dim=4)).eval()
    targets = torch.rand(3, 1, 28, 28)
    h, w = model.encode_indices(targets).shape[1:]
    flow = flows.GridSimplexFlow(h * w, 5, tau=0.5, n_blocks=1, hidden=8)
    res = flows.pulse_search(model, flow, flows.per_image_mse(targets), batch=3, grid=(h, w), steps=5, lr=0.1)
    assert res.best_indices.shape == (3, h, w) and res.relaxed_losses.shape == (5, 3)
    with torch.no_grad():
        again = flows.per_image_mse(targets)(model.decode_indices(res.best_indices))
    assert torch.allclose(again, res.best_losses)
    assert (res.best_losses <= res.argmax_losses.min(0).values + 1e-7).all()
    with pytest.raises(ValueError, match="P="):
        flows.pulse_search(model, flows.GridSimplexFlow(2, 5, tau=0.5, n_blocks=1), flows.per_image_mse(targets),
                           batch=3, grid=(h, w), steps=1)


def test_bad_arguments_are_refused():
    gs = GumbelSoftmax(zipf_probs(4), tau=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        flows.train_reverse_kld(flows.simplex_flow(gs, n_blocks=1, hidden=4), steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="kind"):
        flows.build_flow("glow", gs, 1, 4, 0.0)
    with pytest.raises(ValueError, match="k"):
        flows.simplex_flow(GumbelSoftmax(torch.tensor([0.5, 0.5]), 1.0))

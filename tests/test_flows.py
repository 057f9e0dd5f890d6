"""Flows onto Gumbel-softmax targets, the divergence bookkeeping, the toy experiment and the PULSE-style search."""

import math

import normflows as nf
import pytest
import torch
from torch import nn
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from vqtto import flows
from vqtto.search.losses import mse_to
from vqtto.flows.gumbel import GumbelSoftmax, zipf_probs
from vqtto.models.autoencoder import VQVAE, VQVAEConfig


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
    run = flows.train_reverse_kld(flows.paper_flow(gs, n_blocks=2, hidden=8, literal=True), steps=20, batch=64)
    assert run.diverged and run.diverged_at == 0 and run.reason == "non-finite loss"
    assert run.final_kl is None and run.losses == [] and run.nan_origin == "target log-density"


class _InfiniteGradientLayer(nf.flows.Flow):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(1.0))

    def forward(self, z):
        return z + torch.sqrt(self.p - self.p.detach()), torch.zeros(z.shape[0])  # value z, gradient +inf


def test_non_finite_gradient_is_recorded_with_its_step():
    gs = GumbelSoftmax(zipf_probs(3), tau=1.0)
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(3, trainable=False), [_InfiniteGradientLayer()],
                              flows.LogOrthantTarget(gs))
    run = flows.train_reverse_kld(flow, steps=5, batch=1)
    assert run.diverged_at == 0 and run.reason == "non-finite gradient" and run.nan_origin == "gradient"


def test_reverse_kl_against_the_formula_is_invariant_to_rescaling():
    """k=4, tau=0.1, N(5, I) samples: the same estimate for scale factors 1, 0.5, 0.1 and 0.01."""
    values = flows.scaled_reverse_kl(flows.toy_target(4, 0.1), 5.0, [1.0, 0.5, 0.1, 0.01], n=4096, seed=0)
    assert all(math.isfinite(v) for v in values.values())
    assert max(values.values()) - min(values.values()) < 1e-9


def test_log_orthant_target_is_the_formula_pulled_back_through_exp_and_flat_along_the_diagonal():
    gs = GumbelSoftmax(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), tau=0.3)
    target = flows.LogOrthantTarget(gs)
    x = torch.randn(6, 4, dtype=torch.float64)
    assert torch.allclose(target.log_prob(x), gs.formula_anywhere(x.exp()) + x.sum(1), atol=1e-9)
    torch_ref = ExpRelaxedCategorical(torch.tensor(0.3, dtype=torch.float64), probs=gs.probs,
                                                           validate_args=False)
    assert torch.allclose(target.log_prob(x), torch_ref.log_prob(x), atol=1e-9)
    assert torch.allclose(target.log_prob(x + 7.5), target.log_prob(x), atol=1e-9)


def test_training_records_the_log_scale_and_the_layer_where_the_first_nan_appears():
    runs = flows.run_toy_experiment([2], [4], ["paper", "simplex"], 1, steps=30, batch=64, n_blocks=16, hidden=32,
                                    lr_adam=1e-3, lr_sgd=1e-3, progress=False)
    paper, simplex = flows.select_runs(runs, kind="paper")[0], flows.select_runs(runs, kind="simplex")[0]
    assert paper.diverged and paper.nan_origin.startswith("coupling block") and paper.nan_origin.endswith("of 16")
    assert len(paper.log_scale) == len(paper.losses) == len(paper.max_abs) == paper.diverged_at
    q10, q50, q90 = paper.log_scale[-1]
    assert q10 <= q50 <= q90 and q90 - q10 > paper.log_scale[0][2] - paper.log_scale[0][0]  # the spread widened
    assert not simplex.diverged and simplex.nan_origin is None
    assert max(abs(v) for q in simplex.log_scale for v in q) < 1e-4  # samples on the simplex: log-scale 0


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
    model, targets, (h, w), flow = _search_setup(pairs=3)
    res = flows.pulse_search(model, flow, mse_to(targets), batch=3, grid=(h, w), steps=5, lr=0.1)
    assert res.best_indices.shape == (3, h, w) and res.relaxed_losses.shape == (5, 3)
    with torch.no_grad():
        again = mse_to(targets)(model.decode(model.lookup(res.best_indices)))
    assert torch.allclose(again, res.best_losses)
    assert (res.best_losses <= res.argmax_losses.min(0).values + 1e-7).all()
    with pytest.raises(ValueError, match="P="):
        flows.pulse_search(model, flows.GridSimplexFlow(2, 5, tau=0.5, n_blocks=1), mse_to(targets),
                           batch=3, grid=(h, w), steps=1)


def test_bad_arguments_are_refused():
    gs = GumbelSoftmax(zipf_probs(4), tau=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        flows.train_reverse_kld(flows.simplex_flow(gs, n_blocks=1, hidden=4), steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="kind"):
        flows.build_flow("glow", gs, 1, 4, 0.0)
    with pytest.raises(ValueError, match="k"):
        flows.simplex_flow(GumbelSoftmax(torch.tensor([0.5, 0.5]), 1.0))


# --- the PULSE search leaves the flow as it found it ---------------------------------------------

def _search_setup(pairs: int = 2):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(k=5, hidden=8, embedding_dim=4)).eval()
    targets = torch.rand(pairs, 1, 28, 28)
    h, w = model.encode_indices(targets).shape[1:]
    flow = flows.GridSimplexFlow(h * w, 5, tau=0.5, n_blocks=1, hidden=8)
    return model, targets, (h, w), flow


def test_pulse_search_restores_temperature_and_flags_when_the_loss_raises():
    model, targets, grid, flow = _search_setup()
    calls = []

    def failing_loss(images):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("loss failed mid-search")
        return mse_to(targets)(images)

    with pytest.raises(RuntimeError, match="mid-search"):
        flows.pulse_search(model, flow, failing_loss, batch=2, grid=grid, steps=5, tau_schedule=(3.0, 0.05))
    assert flow.to_simplex.tau == 0.5
    assert all(p.requires_grad for p in flow.parameters())


def test_pulse_search_restores_each_parameters_own_requires_grad_flag():
    model, targets, grid, flow = _search_setup()
    flow.embedding.requires_grad_(False)  # frozen by the caller before the search
    flows.pulse_search(model, flow, mse_to(targets), batch=2, grid=grid, steps=2)
    assert not flow.embedding.requires_grad
    assert all(p.requires_grad for name, p in flow.named_parameters() if name != "embedding")


@pytest.mark.parametrize("steps", [0, -1])
def test_pulse_search_refuses_no_steps_before_any_work(steps):
    model, targets, grid, flow = _search_setup()
    flow.embedding.requires_grad_(False)
    calls = []

    def loss(images):
        calls.append(1)
        return mse_to(targets)(images)

    with pytest.raises(ValueError, match=r"steps must be an int >= 1.*steps=" + str(steps)):
        flows.pulse_search(model, flow, loss, batch=2, grid=grid, steps=steps)
    assert not calls
    assert [p.requires_grad for p in flow.parameters()] == [False] + [True] * (len(list(flow.parameters())) - 1)
    with pytest.raises(ValueError, match="tau_schedule"):
        flows.pulse_search(model, flow, loss, batch=2, grid=grid, steps=1, tau_schedule=(1.0, 0.0))


# --- the toy experiment and the code-grid flow ----------------------------------------------------

def test_toy_runs_do_not_depend_on_which_other_runs_are_made():
    """Chapters 4 and 5 run different flow kinds on the same targets; each run must be what it was together."""
    options = dict(steps=4, batch=16, n_blocks=1, hidden=4, lr_adam=1e-3, lr_sgd=1e-3)
    both = flows.run_toy_experiment([1, 3], [3], ["paper", "simplex"], 1, progress=False, **options)
    alone = flows.run_toy_experiment([1, 3], [3], ["simplex"], 1, progress=False, **options)
    together = flows.select_runs(both, kind="simplex")
    assert [r.meta for r in together] == [r.meta for r in alone]
    assert [r.losses for r in together] == [r.losses for r in alone]
    assert [r.final_kl for r in together] == [r.final_kl for r in alone]
    with pytest.raises(ValueError, match="configurations"):
        flows.run_toy_experiment([5], [3], ["simplex"], 1, progress=False, **options)


def test_untempered_simplex_flow_softmax_has_temperature_one_and_the_target_keeps_its_own():
    gs = flows.toy_target(4, 0.1)
    flow = flows.build_flow("simplex-untempered", gs, 1, 4, 0.0)
    assert flow.flows[-1].tau == 1.0 and flow.p.gs.tau == 0.1
    assert flows.build_flow("simplex", gs, 1, 4, 0.0).flows[-1].tau == 0.1


def test_code_grid_helpers_agree_with_the_categorical():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    grids = flows.sample_code_grids(probs, 20000, (1, 2), seed=0)
    assert grids.shape == (20000, 1, 2)
    assert flows.categorical_fit_error(probs, grids) < 0.02
    ll = flows.code_grid_log_likelihood(probs, torch.tensor([[[0, 2]], [[1, 0]]]))
    assert torch.allclose(ll, torch.log(torch.tensor([0.7 * 0.8, 0.2 * 0.1])))


def test_a_diverging_grid_flow_is_recorded_said_and_searched_through_without_crashing():
    from vqtto.book.chapters import simplex_flow

    probs = flows.fit_code_categorical(torch.randint(5, (40, 2, 2)), 5)
    flow, run = flows.fit_grid_flow(probs, 0.3, n_blocks=1, hidden=8, steps=10, batch=8, lr=1e12, seed=0)
    assert run.diverged and run.final_kl is None
    fit = simplex_flow.grid_flow_fit(run, 10)
    sentence = simplex_flow.grid_fit_sentence(fit, {"flow": 0.5, "sampling": 0.1}, 40, (2, 2))
    assert "diverged" in sentence and f"step {run.diverged_at}" in sentence
    grids = flows.flow_argmax_grids(flow, 16, (2, 2))
    assert grids.shape == (16, 2, 2)
    values = _values({row: 1.0 for row in ("alg2", "pulse", "pulse-untrained", simplex_flow.START, "own-code")})
    verdict = simplex_flow.pulse_verdict(values, fit)
    assert "diverged" in verdict and not simplex_flow.search_findings(values, fit).prior_fitted


def _values(scale: dict, n: int = 8, pixelcnn: bool = False) -> dict:
    """Per-pair values for the search rows: relative loss ``scale[row] * (1 + small per-pair noise)``."""
    from vqtto.book.chapters import simplex_flow

    noise = 1 + 0.01 * torch.arange(n, dtype=torch.float64)
    out = {}
    for row, sc in scale.items():
        out[row] = {simplex_flow.RELATIVE: sc * noise, simplex_flow.CATEGORICAL: -10.0 * sc * noise}
        if pixelcnn:
            out[row][simplex_flow.PIXELCNN] = -20.0 * sc * noise
    return out


def test_search_findings_decide_from_paired_intervals():
    from vqtto.book.chapters import simplex_flow

    fit = simplex_flow.GridFlowFit(steps=3, diverged=False, diverged_at=None, reason=None, first_loss=9.0,
                                   final_kl=4.0, seconds=0.1)
    values = _values({"alg2": 1.0, "pulse": 2.0, "pulse-untrained": 1.5, simplex_flow.START: 4.0, "own-code": 1.0},
                     pixelcnn=True)
    found = simplex_flow.search_findings(values, fit)
    assert found.loss_above_control and not found.loss_below_control and found.loss_difference.excludes()
    assert found.prior_gain.value < 0 and not found.more_plausible_than_control  # trained codes less plausible
    assert found.pixelcnn_below_alg2 and found.pixelcnn_vs_alg2.high < 0
    verdict = simplex_flow.pulse_verdict(values, fit)
    assert "lies above zero" in verdict and "loses to the untrained control" in verdict
    same = _values({"alg2": 1.0, "pulse": 1.0, "pulse-untrained": 1.0, simplex_flow.START: 4.0, "own-code": 1.0})
    assert "includes zero" in simplex_flow.pulse_verdict(same, fit)
    assert simplex_flow.fit_is_close({"flow": 0.05, "sampling": 0.033})
    assert "a loose fit" in simplex_flow.grid_fit_sentence(fit, {"flow": 0.195, "sampling": 0.033}, 100, (7, 7))


# --- chapters 4 and 5: schemas, the reverse-KL figure, the typed results --------------------------

def _run(configuration, kind, losses, diverged_at=None, final=None, k=3):
    reason = None if diverged_at is None else "non-finite loss"
    return flows.FlowRun(list(losses), diverged_at, reason, final, 0.0,
                         {"configuration": configuration, "k": k, "kind": kind, "seed": 0})


def test_reverse_kl_figure_draws_no_mark_in_the_data_area_for_a_run_diverged_at_step_0():
    from types import SimpleNamespace

    from vqtto.book.chapters import paper_flow

    P = SimpleNamespace(ks=[3], configurations=[1, 2], steps=10)
    runs = [_run(1, "paper", [], diverged_at=0), _run(2, "paper", [5.0, 3.0, 2.0], diverged_at=3)]
    fig = paper_flow.reverse_kl_figure(runs, P, ["paper"], "test")
    empty, later = fig.axes[:2]
    assert not empty.lines and not empty.collections
    assert any("diverged at step 0 in 1 of 1 run" in t.get_text() for t in empty.texts)
    data = [ln.get_data() for ln in later.lines]
    assert any(list(x) == [3] and list(y) == [2.0] for x, y in data)  # a cross at the last finite loss
    assert any(list(x) == [3, 3] for x, _ in data)  # a vertical line over the panel at the step of the NaN
    assert any(t.get_text() == "NaN" for t in later.texts) and "DIVERGED: 1 of 1" in later.get_title()
    runs[1].log_scale = [[0.0, 1.0, 2.0], [0.0, 1.5, 3.0], [-1.0, 2.0, 5.0]]
    fig = paper_flow.log_scale_figure(runs, P)
    assert fig.axes[1].collections and not fig.axes[0].collections


@pytest.mark.parametrize("name", ["configurations", "ks", "kinds"])
def test_empty_sweeps_are_refused(name):
    from vqtto import params
    from vqtto.book.chapters import paper_flow, simplex_flow

    for schema in (paper_flow.PARAMS, simplex_flow.PARAMS):
        if name in schema:
            with pytest.raises(params.ParameterError, match=f"'{name}' must be a non-empty list"):
                params.validate({**params.defaults(schema), name: []}, schema)


def test_pulse_tau_must_be_two_positive_temperatures_and_lambda_is_not_quoted_from_the_paper():
    from vqtto import params
    from vqtto.book.chapters import simplex_flow

    schema = simplex_flow.PARAMS
    assert params.validate({**params.defaults(schema), "pulse_tau": [2.0, 0.1]}, schema).pulse_tau == [2.0, 0.1]
    for bad in ([1.0], [1.0, 0.5, 0.1], [1.0, -0.1]):
        with pytest.raises(params.ParameterError, match="pulse_tau"):
            params.validate({**params.defaults(schema), "pulse_tau": bad}, schema)
    assert "paper: 100" not in schema["lam"].help and "gives no value" in schema["lam"].help


def test_chapter_results_are_recorded_and_read_back_with_their_verdicts(tmp_path):
    from types import SimpleNamespace

    from vqtto.book import report
    from vqtto.book.chapters import paper_flow, simplex_flow

    P = SimpleNamespace(profile="smoke", configurations=[1, 2], ks=[3], seeds=1, steps=3, n_blocks=1,
                        kinds=["simplex"], n_pairs=2)
    paper_runs = [_run(1, "paper", [], diverged_at=0), _run(2, "paper", [4.0, 3.0, 2.0], final=1.5)]
    paper_runs[1].log_scale = [[0.0, 1.0, 2.0], [0.0, 1.5, 3.0], [-1.0, 2.0, 5.0]]
    paper_runs[0].nan_origin = "coupling block 2 of 2"
    result = paper_flow.paper_flow_result(P, paper_runs, [], {1.0: 3.0, 0.1: 3.0}, seconds=1.0)
    assert result.diverged_configurations == [1] and result.finished_configurations == [2]
    assert not result.unstable_in_every_configuration and "not fitted" in result.verdict
    assert result.scale_invariant and result.scale_invariance == {"1": 3.0, "0.1": 3.0}
    assert result.spread_grew_everywhere and not result.pulled_towards_zero and result.nan_first_in_coupling_blocks
    assert result.log_scale_measurements["1"] is None and result.log_scale_measurements["2"]["spread_end"] == 6.0
    assert result.nan_origins == {"1": {"coupling block 2 of 2": 1}, "2": {}}
    assert result.final_kl_paper == {"1/k=3": None, "2/k=3": 1.5}
    report.record(result, tmp_path)
    assert report.load_result(paper_flow.PaperFlowResult, "smoke", tmp_path) == result

    simplex_runs = [_run(1, "simplex", [2.0, 1.0], final=0.5), _run(2, "simplex", [2.0, 1.0], final=0.25)]
    fit = simplex_flow.GridFlowFit(steps=3, diverged=False, diverged_at=None, reason=None, first_loss=9.0,
                                   final_kl=4.0, seconds=0.1)
    ref = torch.tensor([1.0, 2.0])
    grids = torch.zeros(2, 1, 1, dtype=torch.long)
    found = {row: (ref * scale, grids) for row, scale in
             (("alg2", 1.0), ("pulse", 2.0), ("pulse-untrained", 3.0), (simplex_flow.START, 4.0), ("own-code", 1.0))}
    values = simplex_flow.per_pair_values(found, ref, {simplex_flow.CATEGORICAL: lambda idx: torch.full((2,), -3.0)})
    result = simplex_flow.simplex_flow_result(P, simplex_runs, fit, {"flow": 0.2, "sampling": 0.1}, values, (1, 1), 2,
                                              2.0)
    assert result.tv_ratio == 2.0 and result.kl_per_position == 4.0 and result.prior_fit_close
    assert result.simplex_diverged_configurations == [] and result.untempered_diverged_configurations is None
    assert result.pulse_relative_loss_median == 2.0 and result.start_relative_loss_median == 4.0
    assert "did not diverge" in result.toy_verdict and result.search_findings.loss_below_control is True
    report.record(result, tmp_path)
    assert report.load_result(simplex_flow.SimplexFlowResult, "smoke", tmp_path) == result


@pytest.mark.chapter
def test_simplex_flow_chapter_records_a_diverged_grid_flow_and_goes_on(tmp_path, monkeypatch):
    """``grid_lr: 1e12`` used to crash the chapter formatting the missing final KL."""
    from vqtto import book
    from vqtto.book import report
    from vqtto.book.chapters import simplex_flow

    monkeypatch.setenv("VQTTO_RESULTS", str(tmp_path / "results"))
    book.execute("06_simplex_flow", "smoke", out_dir=tmp_path,
                 overrides={"grid_lr": 100.0, "ks": [3], "configurations": [1], "pixelcnn_prior": False})
    result = report.load_result(simplex_flow.SimplexFlowResult, "smoke", tmp_path / "results")
    assert result.grid_flow.diverged and result.grid_flow.final_kl is None
    assert not result.search_findings.prior_fitted and "diverged" in result.search_verdict

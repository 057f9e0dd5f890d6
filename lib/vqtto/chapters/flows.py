"""Chapter 4, flows onto the Gumbel-softmax (paper section 5.4, Figure 6, appendix A.5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import data as data_mod
from .. import flows
from ..gumbel import GumbelSoftmax, zipf_probs
from ..params import Param, at_least, between, chapter_schema, each, greater_than, one_of
from ..plots import METHOD_COLORS
from ..profiles import PROFILES


@dataclass(frozen=True)
class Configuration:
    """One of the paper's four settings of the toy experiment."""

    base_mean: float
    tau: float
    optimizer: str

    def label(self, number: int) -> str:
        opt = "Adam" if self.optimizer == "adam" else "SGD-Nesterov"
        return f"({number}) mean {self.base_mean:g}, τ={self.tau:g}, {opt}"


# The paper's four configurations (section 5.4), numbered as there.
CONFIGURATIONS = {
    1: Configuration(0.0, 0.1, "adam"),
    2: Configuration(5.0, 0.1, "sgd-nesterov"),
    3: Configuration(5.0, 1.0, "sgd-nesterov"),
    4: Configuration(0.0, 0.1, "sgd-nesterov"),
}

# Flow kinds compared on the toy targets: the paper's flow in R^k, ours onto the simplex, and
# ours without the temperature inside the softmax bijection (an ablation).
KINDS = ("paper", "simplex", "simplex-untempered")
KIND_STYLE = {
    "paper": dict(color=METHOD_COLORS["flow"], ls="-", label="paper's flow in R^k"),
    "simplex": dict(color=METHOD_COLORS["improved"], ls="-", label="flow onto the simplex (ours)"),
    "simplex-untempered": dict(color=METHOD_COLORS["improved"], ls=":", label="onto the simplex, τ not in the softmax"),
}


PARAMS = chapter_schema({
    "configurations": Param(list, "which of the paper's four configurations to run, e.g. [1, 2, 3, 4]", each(one_of(1, 2, 3, 4)), default=[1, 2, 3, 4]),
    "ks": Param(list, "numbers of classes of the toy targets (paper gives none), e.g. [4, 40]", each(at_least(3)), default=[4, 40]),
    "zipf_s": Param(float, "toy class probabilities pi_i proportional to 1/i^zipf_s", at_least(0.0), default=1.0),
    "kinds": Param(list, f"flow kinds to compare, from {list(KINDS)}", each(one_of(*KINDS), item_kind=str), default=['paper', 'simplex', 'simplex-untempered']),
    "seeds": Param(int, "seeds per configuration, k and kind", at_least(1), default=3),
    "steps": Param(int, "reverse-KL steps per toy run", at_least(1), default=400),
    "batch": Param(int, "samples per reverse-KL estimate", at_least(1), default=256),
    "n_blocks": Param(int, "affine coupling blocks per flow (paper: 16)", at_least(1), default=4),
    "hidden": Param(int, "width of the MLP conditioners", at_least(1), default=32),
    "lr_adam": Param(float, "learning rate with Adam", greater_than(0.0), default=0.001),
    "lr_sgd": Param(float, "learning rate with SGD-Nesterov (momentum 0.9)", greater_than(0.0), default=0.001),
    "dataset": Param(str, "data set of the VQ-VAE for the code-grid part", one_of(*data_mod.DATASETS), default='fashion-mnist'),
    "k_grid": Param(int, "codebook size of the VQ-VAE for the code-grid part (book: 40)", at_least(3), default=40),
    "code_images": Param(int, "training images encoded to fit the per-position categorical", at_least(1), default=10000),
    "grid_tau": Param(float, "temperature of the relaxed code-grid prior", greater_than(0.0), default=0.3),
    "grid_steps": Param(int, "reverse-KL steps of the code-grid flow", at_least(1), default=600),
    "grid_batch": Param(int, "samples per step of the code-grid flow", at_least(1), default=64),
    "grid_blocks": Param(int, "coupling layers of the code-grid flow", at_least(1), default=4),
    "grid_hidden": Param(int, "MLP width of the code-grid flow", at_least(1), default=64),
    "grid_lr": Param(float, "Adam learning rate of the code-grid flow", greater_than(0.0), default=0.003),
    "n_pairs": Param(int, "source-target test pairs for the searches (paper: 200)", at_least(1), default=32),
    "pair_seed": Param(int, "seed of vqtto.pairs.test_pairs (shared with chapter 2)", at_least(0), default=0),
    "pulse_steps": Param(int, "Adam steps on z in the PULSE-style search", at_least(1), default=200),
    "pulse_lr": Param(float, "Adam learning rate on z", greater_than(0.0), default=1.0),
    "pulse_tau": Param(list, "[start, end] temperature annealed during the search (YAML list)", each(greater_than(0.0), item_kind=float), default=[3.0, 0.05]),
    "alpha": Param(float, "Algorithm 2 step size (paper: 0.1)", greater_than(0.0), default=0.1),
    "lam": Param(int, "Algorithm 2 repeats per step, lambda (paper: 100)", at_least(1), default=100),
    "pixelcnn_prior": Param(bool, "also score the codes found under the PixelCNN prior of chapter 3 (k_grid; trained if not cached)", default=True),
    "seed": Param(int, "seed of the code-grid flow and the search starts", at_least(0), default=0),
})


def check_pulse_tau(values: list) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"parameter 'pulse_tau' must be [start, end], got {values!r}")
    return float(values[0]), float(values[1])


# --- the toy experiment ------------------------------------------------------------------------

def toy_target(k: int, tau: float, zipf_s: float) -> GumbelSoftmax:
    """The toy target: Gumbel-softmax over ``k`` classes, ``pi_i ~ 1/i^zipf_s``, temperature ``tau``."""
    return GumbelSoftmax(zipf_probs(k, zipf_s), tau)


def build(kind: str, gs: GumbelSoftmax, n_blocks: int, hidden: int, base_mean: float):
    """A flow of ``kind`` in :data:`KINDS` for target ``gs``."""
    if kind == "simplex-untempered":
        flow = flows.simplex_flow(gs, n_blocks, hidden, base_mean)
        flow.flows[-1].tau = 1.0  # softmax of (u, 0) itself, the flow must learn the 1/tau scale
        return flow
    return flows.build_flow(kind, gs, n_blocks, hidden, base_mean)


def run_toy(P, device: torch.device, progress: bool = True) -> list[flows.FlowRun]:
    """Every (configuration, k, kind, seed) run of the toy experiment; divergences recorded."""
    from tqdm.auto import tqdm

    jobs = [(c, k, kind, s) for c in P.configurations for k in P.ks for kind in P.kinds for s in range(P.seeds)]
    runs = []
    for c, k, kind, seed in tqdm(jobs, desc="toy flows", disable=not progress):
        cfg = CONFIGURATIONS[c]
        gs = toy_target(k, cfg.tau, P.zipf_s)
        torch.manual_seed(seed)
        flow = build(kind, gs, P.n_blocks, P.hidden, cfg.base_mean).to(device)
        lr = P.lr_adam if cfg.optimizer == "adam" else P.lr_sgd
        runs.append(flows.train_reverse_kld(flow, P.steps, P.batch, cfg.optimizer, lr, seed=seed,
                                            meta={"configuration": c, "k": k, "kind": kind, "seed": seed}))
    return runs


def initial_support_rows(P, device: torch.device) -> list[dict]:
    """Where the untrained paper flow's samples fall, per configuration and k."""
    rows = []
    for c in P.configurations:
        cfg = CONFIGURATIONS[c]
        for k in P.ks:
            torch.manual_seed(0)
            flow = flows.paper_flow(toy_target(k, cfg.tau, P.zipf_s), P.n_blocks, P.hidden, cfg.base_mean).to(device)
            fall = flows.where_samples_fall(flow, 4096)
            rows.append({"configuration": cfg.label(c), "k": k, "some coordinate < 0 (log p = NaN)": fall["nan"],
                         "all > 0, sum ≠ 1 (finite, meaningless)": fall["off_simplex_finite"],
                         "on the simplex": fall["on_simplex"]})
    return rows


def _select(runs, **meta):
    return [r for r in runs if all(r.meta[key] == value for key, value in meta.items())]


def divergence_rows(runs: list[flows.FlowRun], P) -> list[dict]:
    """Per configuration, k and kind: fraction diverged, steps of divergence, final KL of the rest."""
    rows = []
    for c in P.configurations:
        for k in P.ks:
            for kind in P.kinds:
                group = _select(runs, configuration=c, k=k, kind=kind)
                div = [r for r in group if r.diverged]
                finals = [r.final_kl for r in group if not r.diverged]
                final = float(np.median(finals)) if finals else "-"
                if finals and kind == "paper":  # a finite loss against the formula off the simplex
                    final = f"{final:.4g} (not a KL)"
                rows.append({
                    "configuration": CONFIGURATIONS[c].label(c), "k": k, "flow": kind,
                    "diverged": f"{len(div)}/{len(group)}",
                    "at steps": ", ".join(str(r.diverged_at) for r in div) or "-",
                    "final reverse KL (median of the rest)": final,
                })
    return rows


def divergence_fractions(runs: list[flows.FlowRun], P) -> dict:
    """``{configuration: {kind: fraction diverged over all k and seeds}}`` for the results page."""
    out = {}
    for c in P.configurations:
        out[str(c)] = {}
        for kind in P.kinds:
            group = _select(runs, configuration=c, kind=kind)
            out[str(c)][kind] = sum(r.diverged for r in group) / len(group)
    return out


def final_kls(runs: list[flows.FlowRun], P, kind: str = "simplex") -> dict:
    """``{"<configuration>/k=<k>": median final KL}`` of the runs of ``kind`` that finished."""
    out = {}
    for c in P.configurations:
        for k in P.ks:
            finals = [r.final_kl for r in _select(runs, configuration=c, k=k, kind=kind) if not r.diverged]
            out[f"{c}/k={k}"] = float(np.median(finals)) if finals else None
    return out


def kl_curves(runs: list[flows.FlowRun], P):
    """The paper's Figure 6 for every flow kind: reverse KL against steps, one panel per (k, configuration).

    Diverged runs are drawn up to their last finite step and end in a cross; a run that diverged
    at step 0 has no curve, only a cross at step 0 on the panel's lower edge.
    """
    fig, axes = plt.subplots(len(P.ks), len(P.configurations), figsize=(3.6 * len(P.configurations), 3.0 * len(P.ks)),
                             squeeze=False, sharex=True)
    for i, k in enumerate(P.ks):
        for j, c in enumerate(P.configurations):
            ax = axes[i, j]
            for kind in P.kinds:
                style = KIND_STYLE[kind]
                for r in _select(runs, configuration=c, k=k, kind=kind):
                    steps = np.arange(len(r.losses))
                    ax.plot(steps, r.losses, color=style["color"], ls=style["ls"], lw=1, alpha=0.8)
                    if r.diverged:
                        y = r.losses[-1] if r.losses else np.nan
                        ax.plot([r.diverged_at], [y], "x", color=style["color"], ms=8, mew=2)
                        if not r.losses:
                            ax.annotate("×", (r.diverged_at, 0), xycoords=("data", "axes fraction"),
                                        color=style["color"], fontsize=14, ha="center", va="bottom")
            ax.set_yscale("symlog", linthresh=1.0)
            ax.grid(alpha=0.3)
            ax.set_title(f"k={k}  " + CONFIGURATIONS[c].label(c), fontsize=8)
            if i == len(P.ks) - 1:
                ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("reverse-KL estimate (nats)")
    handles = [plt.Line2D([], [], color=s["color"], ls=s["ls"], label=s["label"]) for kd, s in KIND_STYLE.items() if kd in P.kinds]
    handles.append(plt.Line2D([], [], color="k", marker="x", ls="", label="diverged here"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Reverse KL against steps (the paper's Figure 6, three flow kinds)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def homogeneity_curve(k: int, tau: float, zipf_s: float, n: int = 8, seed: int = 0):
    """The formula at ``c * y`` for simplex samples ``y`` against the scale ``c``: slope ``-k``."""
    gs = toy_target(k, tau, zipf_s)
    y = gs.sample(n, generator=torch.Generator().manual_seed(seed)).double()
    scales = np.logspace(-2, 1, 40)
    values = np.stack([gs.formula_anywhere(float(c) * y).numpy() for c in scales])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(scales, values - values[np.argmin(np.abs(scales - 1.0))], color=METHOD_COLORS["flow"], alpha=0.6)
    ax.plot(scales, -k * np.log(scales), "k--", label=f"-k log c  (k={k})")
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("scale c of a simplex point y (c = 1 is on the simplex)")
    ax.set_ylabel("formula(c·y) − formula(y)  (nats)")
    ax.set_title("The density formula off the simplex, along rays through the origin")
    ax.legend()
    fig.tight_layout()
    return fig


def simplex_scatter(probs: list[float], taus: list[float], n: int = 2000, seed: int = 0):
    """Gumbel-softmax samples for k=3 in barycentric coordinates, one panel per temperature."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    fig, axes = plt.subplots(1, len(taus), figsize=(3.4 * len(taus), 3.2), squeeze=False)
    for ax, tau in zip(axes[0], taus):
        y = GumbelSoftmax(torch.tensor(probs), tau).sample(n, generator=torch.Generator().manual_seed(seed)).numpy()
        xy = y @ corners
        ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.3, color=METHOD_COLORS["flow"])
        ax.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=0.8)
        for (cx, cy), p in zip(corners, probs):
            ax.annotate(f"π={p:g}", (cx, cy), fontsize=8, ha="center", va="top" if cy == 0 else "bottom")
        ax.set_title(f"τ = {tau:g}")
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle("Gumbel-softmax samples on the 3-class simplex")
    fig.tight_layout()
    return fig


# --- the code grid -------------------------------------------------------------------------------

@torch.no_grad()
def encode_training_codes(model, dataset: str, n: int, device: torch.device, batch: int = 1000) -> torch.Tensor:
    """``(N, h, w)`` int64 index grids of the first ``n`` training images."""
    images = data_mod.load(dataset, "train", limit=n).images
    return torch.cat([model.encode_indices(images[i:i + batch].to(device)).cpu() for i in range(0, len(images), batch)])


def prior_log_likelihood(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``(B,)`` log-likelihood (nats) of index grids ``(B, h, w)`` under per-position probabilities ``(h*w, k)``."""
    flat = indices.reshape(indices.shape[0], -1).cpu()
    return torch.log(probs).gather(1, flat.t()).t().sum(1)


def loss_summary(name: str, losses: torch.Tensor, ref: torch.Tensor, logliks: dict[str, torch.Tensor]) -> dict:
    """One table row: relative final loss (median, mean) and the prior log-likelihoods of the codes found.

    Args:
        logliks: prior name -> ``(B,)`` log-likelihood (nats) of each pair's index grid.
    """
    rel = (losses.cpu() / ref.cpu())
    row = {"method": name, "relative loss, median": float(rel.median()), "relative loss, mean": float(rel.mean()),
           "pairs at most 1.1× own code": f"{int((rel <= 1.1).sum())}/{len(rel)}"}
    for prior, values in logliks.items():
        row[f"log-lik. under {prior} (nats/grid)"] = float(values.float().mean())
    return row


def relative_loss_figure(rel: dict[str, torch.Tensor]):
    """Histogram-like strip plot of per-pair relative losses, one row per method."""
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.6 * len(rel)))
    colors = {"Algorithm 2": METHOD_COLORS["alg2"], "PULSE through the flow": METHOD_COLORS["flow"],
              "flow sample (start)": METHOD_COLORS["prior"]}
    for i, (name, values) in enumerate(rel.items()):
        v = values.cpu().numpy()
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(v))
        ax.scatter(v, i + jitter, s=12, alpha=0.7, color=colors.get(name, f"C{i}"))
        ax.plot([np.median(v)] * 2, [i - 0.3, i + 0.3], color="k", lw=2)
    ax.set_yticks(range(len(rel)), list(rel))
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("final MSE / MSE of the target's own encoder code (log scale; black bar: median)")
    ax.set_title("Search result per pair, relative to encoding the target itself")
    fig.tight_layout()
    return fig


def fit_grid_flow(probs: torch.Tensor, P, device: torch.device) -> tuple[flows.GridSimplexFlow, flows.FlowRun]:
    """A :class:`vqtto.flows.GridSimplexFlow` fitted by reverse KL to the relaxed per-position prior."""
    positions, k = probs.shape
    torch.manual_seed(P.seed)
    flow = flows.GridSimplexFlow(positions, k, P.grid_tau, n_blocks=P.grid_blocks, hidden=P.grid_hidden).to(device)
    flow.target = flows.LogSimplexTarget(GumbelSoftmax(probs, P.grid_tau).to(device))
    run = flows.train_reverse_kld(flow, P.grid_steps, P.grid_batch, "adam", P.grid_lr, seed=P.seed, progress=True)
    return flow, run


@torch.no_grad()
def flow_sample_grids(flow: flows.GridSimplexFlow, n: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` argmax index grids of ``n`` flow samples."""
    torch.manual_seed(seed)
    log_y, _ = flow.sample(n)
    return log_y.argmax(-1).reshape(n, *grid).cpu()


@torch.no_grad()
def sample_grids(probs: torch.Tensor, n: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` index grids drawn position by position from the categorical ``probs`` ``(h*w, k)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs, n, replacement=True, generator=gen).t().reshape(n, *grid)


def categorical_fit_error(probs: torch.Tensor, grids: torch.Tensor) -> float:
    """Mean over positions of the total-variation distance between ``probs`` and the grids' histogram."""
    k = probs.shape[1]
    flat = grids.reshape(grids.shape[0], -1)
    hist = torch.stack([torch.bincount(flat[:, p], minlength=k) for p in range(flat.shape[1])]).float()
    hist = hist / hist.sum(1, keepdim=True)
    return float(0.5 * (hist - probs).abs().sum(1).mean())


def verdict(fractions: dict) -> str:
    """A sentence comparing the measured divergence with the paper's 'unstable in all four'."""
    paper = [c for c, f in fractions.items() if f.get("paper", 0) > 0]
    ours = [c for c, f in fractions.items() if f.get("simplex", 0) > 0]
    text = (f"The paper reports all four configurations unstable. Measured here, the paper's flow diverged in at "
            f"least one run of configurations {paper or 'none'}")
    text += f"; the flow onto the simplex diverged in configurations {ours}." if ours else \
        "; the flow onto the simplex did not diverge in any run of any configuration."
    plain = [c for c, f in fractions.items() if f.get("simplex-untempered", 0) > 0]
    if any("simplex-untempered" in f for f in fractions.values()):
        text += (f" Without the temperature inside the softmax, runs onto the simplex diverged in configurations {plain}:"
                 " matching the support is necessary, the 1/τ scale matters too." if plain else
                 " Without the temperature inside the softmax no run diverged either, in this run.")
    return text


def pulse_verdict(rows: list[dict]) -> str:
    """Sentences comparing the searches of the PULSE table (rows from :func:`loss_summary`)."""
    by = {r["method"]: r for r in rows}
    flow, alg2 = by["PULSE through the flow"], by["Algorithm 2"]
    control, own = by["PULSE, untrained flow (control)"], by["target's own code"]
    med = "relative loss, median"
    ll = "log-lik. under per-position categorical (nats/grid)"
    text = (f"Median relative loss: {flow[med]:.3g} through the trained flow, {alg2[med]:.3g} for Algorithm 2, "
            f"{control[med]:.3g} through the untrained flow. Log-likelihood of the codes found under the "
            "per-position categorical the flow relaxes: "
            f"{flow[ll]:.1f} nats per grid through the trained flow, {control[ll]:.1f} through the untrained one, "
            f"{own[ll]:.1f} for the targets' own codes. ")
    gain = flow[ll] - control[ll]
    if gain > 1.0:
        text += f"The fitted prior makes the codes found more plausible than the control's, by {gain:.1f} nats per grid"
        if abs(flow[ll] - own[ll]) <= 0.1 * abs(own[ll]):
            text += " (about as plausible as the targets' own codes)"
        text += (", at the price of a higher median loss than the control's." if control[med] < flow[med]
                 else ", with a median loss no higher than the control's.")
    else:
        text += "The fitted prior does not make the codes found more plausible than the control's here."
    cnn = "log-lik. under PixelCNN (nats/grid)"
    if cnn in flow:
        text += (f" Under the PixelCNN, which also scores how neighbouring codes fit together, the codes found through "
                 f"the flow score {flow[cnn]:.1f} nats per grid, the control's {control[cnn]:.1f}, Algorithm 2's "
                 f"{alg2[cnn]:.1f} and the targets' own codes {own[cnn]:.1f}"
                 + (": a per-position prior keeps each code plausible in its place, not the grid as a whole."
                    if flow[cnn] < own[cnn] - 0.1 * abs(own[cnn]) else "."))
    return text

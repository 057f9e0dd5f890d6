"""How long the full profile's training would take on this machine, measured from a few steps."""

from __future__ import annotations



from .runner import chapter_names, profile_params, schema


# --- the full profile on a CPU ---------------------------------------------------------------------

def _seconds_per_step(model, loss, batch: tuple, steps: int = 2) -> float:
    """Measured seconds of one Adam step of ``model`` on ``batch`` (after one warm-up step)."""
    import time

    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        loss(*batch).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def trained_models(profile: str) -> tuple[set, set]:
    """The (data set, k) of the VQ-VAEs and of the priors ``profile``'s chapters train, read from their parameters."""
    vqvaes, priors = set(), set()
    for chapter in chapter_names():
        p = {name: param.default for name, param in schema(chapter).items()}
        p.update(profile_params(profile, chapter))
        datasets = list(p.get("datasets") or [p.get("dataset", "fashion-mnist")])
        ks = [p[name] for name in ("k", "k_reference", "k_small", "k_grid") if isinstance(p.get(name), int)]
        ks += list(p.get("k_sweep") or [])
        vqvaes |= {(datasets[0], k) for k in ks} | {(d, p["k"]) for d in datasets if isinstance(p.get("k"), int)}
        if "prior" in chapter and isinstance(p.get("k"), int):
            priors.add((datasets[0], p["k"]))
        if isinstance(p.get("k_grid"), int):
            priors.add((datasets[0], p["k_grid"]))
    return vqvaes, priors


def cpu_estimate(profile: str = "full", train_images: int = 60_000) -> str:
    """How long ``profile``'s model training takes on this machine's CPU, from a few measured steps.

    Times two Adam steps (after a warm-up step) of the profile's VQ-VAE preset on a batch of
    Fashion-MNIST-sized images and of its PixelCNN preset on a batch of 7 x 7 grids, and
    multiplies by the steps of every VQ-VAE and prior the chapters train (:func:`trained_models`). A lower bound: larger images, the searches and the
    flows come on top. Returns the message to print.
    """
    import math

    import torch

    from ..models.pixelcnn import GatedPixelCNN, PixelCNNConfig
    from ..models.profiles import prior_preset, vqvae_preset
    from ..models.autoencoder import VQVAE, VQVAEConfig

    vq, pr = vqvae_preset(profile), prior_preset(profile)
    vq_batch, pr_batch = vq["train"]["batch_size"], pr["train"]["batch_size"]
    torch.manual_seed(0)
    vq_model = VQVAE(VQVAEConfig(k=512, **vq["model"]))
    vq_step = _seconds_per_step(vq_model, lambda x: vq_model.loss(x)["total"], (torch.rand(vq_batch, 1, 28, 28),))
    pr_model = GatedPixelCNN(PixelCNNConfig(k=512, **pr["model"]))
    pr_step = _seconds_per_step(pr_model, pr_model.loss, (torch.randint(512, (pr_batch, 7, 7)),))
    vq_steps = vq["train"]["epochs"] * math.ceil(train_images / vq_batch)
    pr_steps = pr["train"]["epochs"] * math.ceil(train_images / pr_batch)
    vqvaes, priors = trained_models(profile)
    hours = (len(vqvaes) * vq_steps * vq_step + len(priors) * pr_steps * pr_step) / 3600
    return (f"No GPU on this machine: the {profile} profile is meant for one. An estimate for this CPU, measured "
            f"from a few training steps: {vq_step:.2f} s per step of the {profile} VQ-VAE, {pr_step:.2f} s per step "
            f"of its PixelCNN; the chapters train {len(vqvaes)} VQ-VAEs x {vq_steps} steps and {len(priors)} priors x "
            f"{pr_steps} steps, so at least {hours:.1f} hours here (larger images, the searches and the flows come "
            f"on top). To run it on a GPU: on a machine with CUDA, `make book PROFILE={profile}` (or "
            f"`vqtto book run --profile {profile}`); see the README's 'Running on a GPU' and 'Running at scale'. "
            "Going on here.")

"""Model presets of the three profiles, shared by every chapter: the VQ-VAE's and the prior's.

A chapter's own knobs (pairs, steps, alpha grids...) are its papermill parameters, set per
profile in ``params/<profile>.yaml``. What must be *the same* across chapters so that they share
cached models (the VQ-VAE's width, how long it trains, on how many images; the same for the
PixelCNN prior) lives here.

- ``smoke``: seconds per model; for tests and CI. Quality is not the point.
- ``quick``: the default ``make book`` on 2 CPU cores (measured times beside the benchmark's throughput: README).
- ``full``:  the paper's scale, meant for one GPU.
"""

from __future__ import annotations

PROFILES = ("smoke", "quick", "full")

# Keys are VQVAEConfig / TrainConfig field names.
VQVAE_PRESETS: dict[str, dict[str, dict]] = {
    "smoke": {
        "model": {"hidden": 16, "embedding_dim": 8, "n_res": 1},
        "train": {"epochs": 1, "batch_size": 64, "train_limit": 1024, "test_limit": 256,
                  "restart_every": 4, "evals_per_epoch": 4},
    },
    "quick": {
        "model": {"hidden": 64, "embedding_dim": 16, "n_res": 1},
        "train": {"epochs": 2, "batch_size": 128, "train_limit": None, "test_limit": 2000,
                  "restart_every": 50, "evals_per_epoch": 10},
    },
    "full": {
        "model": {"hidden": 128, "embedding_dim": 64, "n_res": 2},
        "train": {"epochs": 20, "batch_size": 128, "train_limit": None, "test_limit": None,
                  "restart_every": 200, "evals_per_epoch": 4},
    },
}

# Keys are PixelCNNConfig / PriorTrainConfig field names. Quick is sized for about 2.5 minutes
# of training on one CPU thread at k=512 over all 60k Fashion-MNIST grids (measured: ~0.1 s per
# step of 128 grids). Full is the paper's scale for one GPU.
PRIOR_PRESETS: dict[str, dict[str, dict]] = {
    "smoke": {
        "model": {"channels": 16, "n_layers": 2, "kernel_size": 3},
        "train": {"epochs": 2, "batch_size": 64, "train_limit": 1024, "test_limit": 256, "evals_per_epoch": 2},
    },
    "quick": {
        "model": {"channels": 32, "n_layers": 3, "kernel_size": 5},
        "train": {"epochs": 3, "batch_size": 128, "train_limit": None, "test_limit": None, "evals_per_epoch": 4},
    },
    "full": {
        "model": {"channels": 128, "n_layers": 10, "kernel_size": 5},
        "train": {"epochs": 30, "batch_size": 128, "lr": 1e-3, "train_limit": None, "test_limit": None,
                  "evals_per_epoch": 2, "val_limit": None},
    },
}

# Keys are MaskedPriorConfig / MaskedTrainConfig field names (vqtto.models.masked). Quick is sized to
# train within 3 minutes on 2 CPU cores at k=512 over all 60k Fashion-MNIST grids.
MASKED_PRIOR_PRESETS: dict[str, dict[str, dict]] = {
    "smoke": {
        "model": {"dim": 16, "layers": 1, "heads": 2, "ff_mult": 2},
        "train": {"epochs": 2, "batch_size": 64, "train_limit": 1024, "test_limit": 256, "evals_per_epoch": 2,
                  "val_limit": 128, "score_limit": 64},
    },
    "quick": {
        "model": {"dim": 64, "layers": 2, "heads": 4, "ff_mult": 2},
        "train": {"epochs": 5, "batch_size": 128, "lr": 2e-3, "train_limit": None, "test_limit": None,
                  "evals_per_epoch": 4, "val_limit": 1000, "score_limit": 500},
    },
    "full": {
        "model": {"dim": 256, "layers": 8, "heads": 8, "ff_mult": 4, "dropout": 0.1},
        "train": {"epochs": 60, "batch_size": 256, "lr": 5e-4, "train_limit": None, "test_limit": None,
                  "evals_per_epoch": 2, "val_limit": 2000, "score_limit": 10000},
    },
}

# Keys are ClassifierConfig / ClassifierTrainConfig field names (vqtto.tasks.completion): the small CNN
# that judges whether a completed image keeps its class. Quick trains within 2 minutes of CPU.
CLASSIFIER_PRESETS: dict[str, dict[str, dict]] = {
    "smoke": {
        "model": {"channels": 4, "hidden": 16},
        "train": {"epochs": 1, "batch_size": 64, "train_limit": 1024, "test_limit": 256, "evals_per_epoch": 2},
    },
    "quick": {
        "model": {"channels": 16, "hidden": 64},
        "train": {"epochs": 2, "batch_size": 128, "train_limit": None, "test_limit": None, "evals_per_epoch": 2},
    },
    "full": {
        "model": {"channels": 32, "hidden": 128},
        "train": {"epochs": 10, "batch_size": 128, "train_limit": None, "test_limit": None, "evals_per_epoch": 2},
    },
}


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")


def _copy(presets: dict[str, dict[str, dict]], profile: str) -> dict[str, dict]:
    check_profile(profile)
    return {part: dict(fields) for part, fields in presets[profile].items()}


def vqvae_preset(profile: str) -> dict[str, dict]:
    """The VQ-VAE's ``"model"`` and ``"train"`` presets of ``profile`` (copies, safe to modify)."""
    return _copy(VQVAE_PRESETS, profile)


def prior_preset(profile: str) -> dict[str, dict]:
    """The PixelCNN prior's ``"model"`` and ``"train"`` presets of ``profile`` (copies, safe to modify)."""
    return _copy(PRIOR_PRESETS, profile)


def masked_prior_preset(profile: str) -> dict[str, dict]:
    """The masked-token prior's ``"model"`` and ``"train"`` presets of ``profile`` (copies, safe to modify)."""
    return _copy(MASKED_PRIOR_PRESETS, profile)


def classifier_preset(profile: str) -> dict[str, dict]:
    """The class-consistency classifier's ``"model"`` and ``"train"`` presets of ``profile`` (copies)."""
    return _copy(CLASSIFIER_PRESETS, profile)


def apply_overrides(preset: dict[str, dict], overrides: dict, model_fields: set[str], train_fields: set[str],
                    what: str) -> dict[str, dict]:
    """Put each of ``overrides`` into the ``"model"`` or ``"train"`` part of ``preset`` by field name.

    Raises:
        ValueError: for a name that is neither, listing the allowed ones; ``what`` names the model kind.
    """
    for name, value in overrides.items():
        if name in model_fields:
            preset["model"][name] = value
        elif name in train_fields:
            preset["train"][name] = value
        else:
            raise ValueError(f"unknown {what} option {name!r}; allowed: {sorted(model_fields | train_fields)}")
    return preset

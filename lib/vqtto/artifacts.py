"""A cache of trained models keyed by the hash of their full configuration.

Every artifact file holds ``{"kind", "config", "sha256", "blob"}``: ``blob`` is the
``torch.save`` bytes of the payload and ``sha256`` its digest. Files are written to a temporary
name in the cache folder and renamed into place, so a crash never leaves a half-written file
under a real key. On load the digest and the stored config are checked: a corrupt file is
reported and rebuilt, a file whose config differs from the one asked for is refused.

The cache folder is ``$VQTTO_CACHE`` when set, else ``.cache/vqtto`` at the repository root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import data as data_mod
from .device import pick_device
from .profiles import apply_overrides, vqvae_preset
from .training import History, TrainConfig, evaluate, train_vqvae
from .vqvae import VQVAE, VQVAEConfig

CACHE_FORMAT = 1


class ArtifactMismatch(RuntimeError):
    """A cache file holds a model trained with another configuration than the one asked for."""


def cache_dir() -> Path:
    env = os.environ.get("VQTTO_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "vqtto"


def config_key(kind: str, config: dict) -> str:
    """A short stable hash of ``kind`` and the JSON form of ``config``."""
    text = json.dumps({"kind": kind, "config": config, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def path_for(kind: str, config: dict) -> Path:
    return cache_dir() / f"{kind}-{config_key(kind, config)}.pt"


def save(path: Path, kind: str, config: dict, payload: Any) -> None:
    """Write ``payload`` with its config and digest to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    blob = buf.getvalue()
    record = {"kind": kind, "config": config, "sha256": hashlib.sha256(blob).hexdigest(), "blob": blob}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CorruptArtifact(RuntimeError):
    """A cache file could not be read or its digest does not match its contents."""


def load(path: Path, kind: str, config: dict) -> Any:
    """Read and verify the artifact at ``path``.

    Raises:
        CorruptArtifact: unreadable file or digest mismatch.
        ArtifactMismatch: the stored kind or config differs from the one asked for.
    """
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
        blob = record["blob"]
    except Exception as err:  # noqa: BLE001 - unreadable for any reason means corrupt
        raise CorruptArtifact(f"{path} is unreadable ({type(err).__name__}: {err})") from err
    if hashlib.sha256(blob).hexdigest() != record.get("sha256"):
        raise CorruptArtifact(f"{path}: stored sha256 does not match its contents")
    if record.get("kind") != kind or record.get("config") != config:
        raise ArtifactMismatch(
            f"{path} holds a {record.get('kind')!r} built with config {record.get('config')!r}, "
            f"not the {kind!r} with config {config!r} that was asked for; delete the file to rebuild it"
        )
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)


def load_or_build(kind: str, config: dict, build: Callable[[], Any], rebuild: bool = False) -> Any:
    """Return the cached payload for ``(kind, config)``, building and saving it when absent.

    A corrupt file is reported with a warning and rebuilt; a mismatched one raises
    :class:`ArtifactMismatch`. ``build()`` must return a picklable payload (CPU tensors).
    """
    path = path_for(kind, config)
    if path.exists() and not rebuild:
        try:
            return load(path, kind, config)
        except CorruptArtifact as err:
            warnings.warn(f"{err}; rebuilding it", stacklevel=2)
    payload = build()
    save(path, kind, config, payload)
    return payload


# --- VQ-VAE --------------------------------------------------------------------------------

@dataclass
class TrainedVQVAE:
    """A trained VQ-VAE with its history and the test metrics of the final model."""

    model: VQVAE
    history: History
    test: dict[str, float]
    config: dict

    @property
    def k(self) -> int:
        return self.model.cfg.k


def vqvae_config(dataset: str, k: int, profile: str = "quick", **overrides: Any) -> dict:
    """The full configuration of a VQ-VAE: profile preset, then ``overrides``.

    ``overrides`` may name any :class:`VQVAEConfig` or :class:`TrainConfig` field.
    """
    data_mod.check_name(dataset)
    preset = vqvae_preset(profile)
    apply_overrides(preset, overrides, set(VQVAEConfig.__dataclass_fields__), set(TrainConfig.__dataclass_fields__),
                    "VQ-VAE")
    preset["model"]["k"] = k
    preset["model"]["in_channels"] = 1 if dataset == "fashion-mnist" else 3
    model_cfg = VQVAEConfig(**preset["model"])  # validates
    train_cfg = TrainConfig(**preset["train"])
    return {"dataset": dataset, "model": model_cfg.as_dict(), "train": train_cfg.as_dict()}


def vqvae(
    dataset: str = "fashion-mnist",
    k: int = 512,
    profile: str = "quick",
    device: torch.device | str = "auto",
    progress: bool = True,
    **overrides: Any,
) -> TrainedVQVAE:
    """A trained VQ-VAE from the cache, trained (with a progress bar) and cached if absent.

    Example: ``artifacts.vqvae("fashion-mnist", k=40, profile="quick")``.
    """
    device = pick_device(device) if isinstance(device, str) else device
    config = vqvae_config(dataset, k, profile, **overrides)

    def build() -> dict:
        model_cfg = VQVAEConfig(**config["model"])
        train_cfg = TrainConfig(**config["train"])
        torch.manual_seed(train_cfg.seed)
        model = VQVAE(model_cfg)
        train = data_mod.load(dataset, "train", limit=train_cfg.train_limit)
        test = data_mod.load(dataset, "test", limit=train_cfg.test_limit)
        hist = train_vqvae(model, train, test, train_cfg, device, progress=progress)
        test_metrics = evaluate(model, test.images, device)
        return {"state_dict": {k_: v.cpu() for k_, v in model.state_dict().items()},
                "history": hist.as_dict(), "test": test_metrics}

    payload = load_or_build("vqvae", config, build)
    model = VQVAE(VQVAEConfig(**config["model"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return TrainedVQVAE(model=model, history=History(**payload["history"]), test=payload["test"], config=config)

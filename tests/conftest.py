"""Test-session setup: caches and results go to a temporary folder, never the user's."""

import os
import tempfile

import pytest
import torch

_TMP = tempfile.mkdtemp(prefix="vqtto-tests-")
os.environ.setdefault("VQTTO_CACHE", os.path.join(_TMP, "cache"))
os.environ.setdefault("VQTTO_RESULTS", os.path.join(_TMP, "results"))
# No progress bars in the executed smoke chapters: a model trained in the first run and loaded
# from the cache in the re-run (tests/test_rerun.py) would otherwise differ by its bar alone.
os.environ["TQDM_DISABLE"] = "1"
# A smoke cell takes seconds; a kernel that stops answering fails its test after this many instead
# of stalling the suite (the chapter tests then run the chapter once more, see test_chapters.py).
os.environ.setdefault("VQTTO_CELL_TIMEOUT", "300")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


SMOKE_STAGE = os.path.join(_TMP, "smoke-book")


@pytest.fixture(scope="session")
def smoke_stage():
    """Folder of the smoke-profile executed chapters, shared by the chapter and the site tests."""
    from pathlib import Path

    path = Path(SMOKE_STAGE)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def tiny_vqvae():
    """A small random VQ-VAE on 1 x 28 x 28 images, k=8, D=4."""
    from vqtto.models.autoencoder import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    return VQVAE(VQVAEConfig(k=8, hidden=8, embedding_dim=4, n_res=1))

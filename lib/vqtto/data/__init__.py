"""Image data sets as in-memory tensors: images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)``.

- ``"fashion-mnist"`` (the default, offline): Debian's ``dataset-fashion-mnist`` package puts the
  raw files in ``/usr/share/datasets/fashion-mnist``; they are gunzipped into
  ``ROOT/FashionMNIST/raw`` and read by torchvision. Without them, torchvision's download.
- ``"cifar10"``: torchvision's download into a temporary folder renamed into place only when
  complete, so a failed download leaves nothing half-written; a clear error without internet.
- ``"miniimagenet"``: a folder the user supplies, in the layout of the common VQ-VAE repos:
  ``ROOT/miniimagenet/images/*.jpg`` and ``ROOT/miniimagenet/{train,val,test}.csv`` with a
  header ``filename,label``. Images are resized to 84 x 84.

``ROOT`` is ``$VQTTO_DATA`` when set, else ``data/`` at the repository root.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("fashion-mnist", "cifar10", "miniimagenet")
SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MINIIMAGENET_SIZE = 84


class DataUnavailable(RuntimeError):
    """The data set cannot be had on this machine; the message says how to get it."""


@dataclass(frozen=True)
class ImageSet:
    """An image data set held in memory.

    Attributes:
        images: ``(N, C, H, W)`` float32 in [0, 1].
        labels: ``(N,)`` int64 class labels.
        name: the data set's name.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])


def data_root() -> Path:
    """The folder data sets live in: ``$VQTTO_DATA`` or ``<repo>/data``."""
    env = os.environ.get("VQTTO_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "data"


def check_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")


def load(dataset: str, split: str = "train", root: Path | None = None, limit: int | None = None) -> ImageSet:
    """Load ``split`` of ``dataset`` into memory; ``limit`` keeps the first ``limit`` images."""
    check_name(dataset)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit!r}")
    root = Path(root) if root is not None else data_root()
    loader = {"fashion-mnist": _fashion_mnist, "cifar10": _cifar10, "miniimagenet": _miniimagenet}[dataset]
    images, labels = loader(root, split, limit)
    return ImageSet(images=images, labels=labels, name=dataset)


# --- Fashion-MNIST -----------------------------------------------------------------------

def prepare_fashion_mnist(root: Path, source: Path = DEBIAN_FASHION_MNIST) -> bool:
    """Gunzip Debian's Fashion-MNIST files into ``root/FashionMNIST/raw``; True if present after."""
    raw = Path(root) / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in _FASHION_FILES):
        return True
    if not all((source / f"{f}.gz").exists() for f in _FASHION_FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name in _FASHION_FILES:
        tmp = raw / f".{name}.tmp"
        with gzip.open(source / f"{name}.gz", "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, raw / name)
    return True


def _fashion_mnist(root: Path, split: str, limit: int | None):
    from torchvision.datasets import FashionMNIST

    if not prepare_fashion_mnist(root):
        try:
            _download_atomically(lambda tmp: FashionMNIST(tmp, train=True, download=True), root, "FashionMNIST")
        except Exception as err:  # noqa: BLE001 - any download failure means the same to the user
            raise DataUnavailable(
                "Fashion-MNIST is not on this machine and could not be downloaded "
                f"({err}). Install Debian's package: apt-get install dataset-fashion-mnist"
            ) from err
    ds = FashionMNIST(root, train=(split == "train"), download=False)
    images = ds.data[:limit].unsqueeze(1).float().div_(255.0)
    return images.contiguous(), ds.targets[:limit].long()


# --- CIFAR-10 ------------------------------------------------------------------------------

def _download_atomically(fetch, root: Path, folder: str) -> None:
    """Run ``fetch(tmpdir)`` and move ``tmpdir/folder`` to ``root/folder`` only if it succeeds."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        fetch(tmp)
        src = Path(tmp) / folder
        if (root / folder).exists():
            shutil.rmtree(root / folder)
        os.replace(src, root / folder)


def _cifar10(root: Path, split: str, limit: int | None):
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    if not folder.exists():
        try:
            _download_atomically(lambda tmp: CIFAR10(tmp, train=True, download=True), root, "cifar-10-batches-py")
        except Exception as err:  # noqa: BLE001
            raise DataUnavailable(
                f"CIFAR-10 is not in {root} and the download failed ({type(err).__name__}: {err}). "
                "On a machine with internet it is downloaded automatically; otherwise place "
                f"torchvision's cifar-10-batches-py folder in {root}."
            ) from err
    return _read_cifar_batches(folder, split, limit)


class UnsafeFile(ValueError):
    """A data file's pickle asks for something other than plain data and numpy arrays."""


# What CIFAR-10's pickles may build: numpy arrays and their dtypes, nothing that can run code.
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar")}


def _load_plain_pickle(fh):
    """Unpickle ``fh`` allowing only builtin containers, numbers, strings and numpy arrays."""
    import pickle

    class _Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in _PICKLE_ALLOWED:
                return super().find_class(module, name)
            raise UnsafeFile(f"{getattr(fh, 'name', 'the file')} asks to load {module}.{name}; only plain data "
                             "and numpy arrays are read, so it is refused")

    return _Restricted(fh, encoding="latin1").load()


def _read_cifar_batches(folder: Path, split: str, limit: int | None):
    """Read CIFAR-10's python pickle batches (torchvision's download layout), refusing anything but data."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    arrays, labels = [], []
    for name in names:
        with open(folder / name, "rb") as fh:
            batch = _load_plain_pickle(fh)
        arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    images = torch.from_numpy(np.concatenate(arrays)[:limit]).float().div_(255.0)
    return images.contiguous(), torch.tensor(labels[:limit], dtype=torch.long)


# --- Mini-ImageNet ---------------------------------------------------------------------------

def _miniimagenet(root: Path, split: str, limit: int | None):
    from PIL import Image

    base = root / "miniimagenet"
    csv_name = {"train": "train.csv", "test": "test.csv"}[split]
    if not (base / csv_name).exists() or not (base / "images").is_dir():
        raise DataUnavailable(
            f"Mini-ImageNet is a folder you supply: expected {base}/images/ and {base}/{csv_name} "
            "(columns filename,label). vqtto cannot download it."
        )
    with open(base / csv_name, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"filename", "label"} <= set(rows[0]):
        raise DataUnavailable(f"{base / csv_name} must have the columns filename,label; got {sorted(rows[0])}")
    rows = rows[:limit]
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    images = np.empty((len(rows), MINIIMAGENET_SIZE, MINIIMAGENET_SIZE, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        with Image.open(base / "images" / row["filename"]) as im:
            images[i] = np.asarray(im.convert("RGB").resize((MINIIMAGENET_SIZE, MINIIMAGENET_SIZE), Image.BILINEAR))
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.contiguous(), torch.tensor([index[r["label"]] for r in rows], dtype=torch.long)

"""The real loaders on tiny fakes of each on-disk format."""

import csv
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from vqtto import data


def _idx(path, array):
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_debian_layout(tmp_path):
    src = tmp_path / "debian"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _idx(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(src / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    root = tmp_path / "root"
    assert data.prepare_fashion_mnist(root, source=src)
    test = data.load("fashion-mnist", "test", root=root)
    assert test.images.shape == (4, 1, 28, 28) and test.images.dtype == torch.float32
    assert 0 <= test.images.min() and test.images.max() <= 1
    assert data.load("fashion-mnist", "train", root=root, limit=2).images.shape[0] == 2


def test_cifar10_from_torchvision_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    def batch(name, n):
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, fh)
    for i in range(1, 6):
        batch(f"data_batch_{i}", 2)
    batch("test_batch", 3)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    test = data.load("cifar10", "test", root=tmp_path)
    train = data.load("cifar10", "train", root=tmp_path)
    assert test.images.shape == (3, 3, 32, 32) and train.images.shape == (10, 3, 32, 32)


def test_cifar10_without_internet_leaves_nothing_behind(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(data.DataUnavailable, match="CIFAR-10"):
        data.load("cifar10", "test", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_miniimagenet_from_user_folder(tmp_path):
    from PIL import Image

    base = tmp_path / "miniimagenet"
    (base / "images").mkdir(parents=True)
    rows = []
    for i in range(3):
        Image.fromarray(np.full((100, 120, 3), 40 * i, dtype=np.uint8)).save(base / "images" / f"n0{i}.jpg")
        rows.append({"filename": f"n0{i}.jpg", "label": f"n0{i % 2}"})
    for split in ("train", "test"):
        with open(base / f"{split}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, ["filename", "label"])
            w.writeheader()
            w.writerows(rows)
    ds = data.load("miniimagenet", "test", root=tmp_path)
    assert ds.images.shape == (3, 3, 84, 84) and ds.labels.tolist() == [0, 1, 0]


def test_missing_miniimagenet_says_what_to_supply(tmp_path):
    with pytest.raises(data.DataUnavailable, match="train.csv"):
        data.load("miniimagenet", "train", root=tmp_path)


@pytest.mark.parametrize("kwargs,match", [({"dataset": "mnist"}, "dataset"), ({"split": "val"}, "split"),
                                          ({"limit": 0}, "limit")])
def test_bad_arguments(kwargs, match):
    args = {"dataset": "fashion-mnist", "split": "train", **kwargs}
    with pytest.raises(ValueError, match=match):
        data.load(**args)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_cifar_batch_whose_pickle_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": _RunsCode(marker), "labels": [0]}, fh)
    with pytest.raises(data.UnsafeFile, match=r"asks to load io\.open.*refused"):
        data.load("cifar10", "test", root=tmp_path)
    assert not marker.exists()

import pytest
import torch

from vqtto import data
from vqtto.data.pairs import test_pairs as make_pairs


@pytest.fixture
def fake_test_split(monkeypatch):
    images = torch.rand(5, 1, 28, 28)
    monkeypatch.setattr(data, "load", lambda name, split, limit=None: data.ImageSet(images[:limit], torch.zeros(5).long(), name))
    return images


def test_pairs_are_reproducible_and_distinct(fake_test_split):
    a, b = make_pairs(n=50, seed=3), make_pairs(n=50, seed=3)
    assert torch.equal(a.source_ids, b.source_ids) and torch.equal(a.target_ids, b.target_ids)
    assert (a.source_ids != a.target_ids).all()
    assert torch.equal(a.sources, fake_test_split[a.source_ids])
    assert not torch.equal(make_pairs(n=50, seed=4).source_ids, a.source_ids)


def test_bad_n(fake_test_split):
    with pytest.raises(ValueError, match="n"):
        make_pairs(n=0)

"""One median, one quantile, one bootstrap interval for the whole book."""

import pytest
import torch

from vqtto import stats


def test_median_of_an_even_sample_is_the_mean_of_the_two_middle_values():
    x = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert stats.median(x) == 2.5
    assert float(x.median()) == 2.0  # torch's lower middle, which the book no longer uses
    assert stats.median([3, 1, 2]) == 2.0


def test_no_page_or_library_module_uses_torchs_lower_middle_median():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("lib/vqtto/**/*.py"), *root.glob("book/*.ipynb")]
    offenders = [str(p.relative_to(root)) for p in files if re.search(r"\.median\(\)", p.read_text())]
    assert not offenders, f"use vqtto.stats.median instead of Tensor.median() in {offenders}"


def test_bootstrap_interval_is_reproducible_and_covers_the_median():
    x = torch.randn(200, generator=torch.Generator().manual_seed(1))
    lo, hi = stats.bootstrap_interval(x, seed=3)
    assert (lo, hi) == stats.bootstrap_interval(x, seed=3)
    assert lo < stats.median(x) < hi and hi - lo < 0.5


def test_share_and_bad_input():
    assert stats.share(torch.tensor([True, False, True, True])) == 0.75
    with pytest.raises(ValueError, match="empty"):
        stats.median([])
    with pytest.raises(ValueError, match="q must be"):
        stats.quantile([1.0], 1.5)

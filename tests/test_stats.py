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


def test_share_interval_is_wilsons_and_does_not_collapse_at_the_ends():
    lo, hi = stats.share_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert stats.share_interval(8, 8) == (pytest.approx(0.6756, abs=1e-4), 1.0)
    assert stats.share_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    est = stats.share_estimate(torch.tensor([True, False] * 20))
    assert (est.value, est.n) == (0.5, 40) and est.percent() == "50% [35%, 65%]"
    with pytest.raises(ValueError, match="successes"):
        stats.share_interval(3, 2)


def test_clustered_share_counts_perfectly_correlated_runs_once():
    instances = torch.arange(10).repeat_interleave(4)  # 10 instances, 4 starts each
    solved = instances < 5  # every start of an instance agrees
    plain, clustered = stats.share_estimate(solved), stats.share_estimate(solved, instances)
    assert clustered.value == plain.value == 0.5
    assert (clustered.low, clustered.high) == pytest.approx(stats.share_interval(5, 10))
    assert clustered.high - clustered.low > plain.high - plain.low
    mixed = torch.tensor([True, False] * 20)  # each instance half solved: no clustering effect
    assert stats.share_estimate(mixed, instances).low == pytest.approx(stats.share_estimate(mixed).low)
    assert stats.share_estimate(torch.ones(40, dtype=torch.bool), instances).low == pytest.approx(
        stats.share_interval(10, 10)[0])


def test_median_estimate_and_paired_share_difference():
    est = stats.median_estimate(torch.arange(101.0))
    assert est.value == 50.0 and est.low < 50 < est.high and est.excludes(0) and not est.excludes(50)
    assert est.text(".0f").startswith("50 [")
    diff = stats.share_difference(torch.ones(50, dtype=torch.bool), torch.zeros(50, dtype=torch.bool))
    assert diff.value == 1.0 and 0.85 < diff.low < 1.0 == diff.high and diff.excludes(0)
    same = stats.share_difference(torch.tensor([True, False] * 25), torch.tensor([False, True] * 25))
    assert same.value == 0.0 and not same.excludes(0)
    # 4 of 40 pairs won by one side and none by the other: a sign test gives p = 0.125, not resolved
    few = stats.share_difference(torch.ones(40, dtype=torch.bool), torch.arange(40) < 36)
    assert few.value == pytest.approx(0.1) and few.low < 0 < few.high
    many = stats.share_difference(torch.ones(40, dtype=torch.bool), torch.arange(40) < 30)
    assert many.low > 0

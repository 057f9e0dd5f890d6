"""Chapter modules' verdicts decided from their intervals (the search chapter's leads and polish, the constrained tasks' prior verdict)."""

from types import SimpleNamespace

import pytest
import torch

from vqtto.book.chapters import reaching_target as chapter


class _Trace(SimpleNamespace):
    def __len__(self):
        return len(self.best_losses)

    def fraction(self, reason):
        return 0.5 if reason == "stalled" else 0.0


def _traces():
    ref = torch.ones(40)
    hits = {"relaxed": torch.ones(40, dtype=torch.bool), "gwg": torch.arange(40) < 36,
            "alg2-restarts": torch.arange(40) < 4}
    def trace(h):
        best = torch.where(h, 0.5, 3.0) + 0.001 * torch.arange(40)
        return _Trace(best_losses=best, losses=[b.view(1) for b in best], costs=[torch.ones(1)] * 40,
                      decoder_equivalents=40 * 1000.0, seconds=1.0)
    return {m: trace(h) for m, h in hits.items()}, ref


def test_leads_are_paired_and_the_verdict_says_whether_they_are_resolved():
    traces, ref = _traces()
    assert chapter.best_method(traces, ref) == "relaxed" and chapter.runner_up(traces, ref, "relaxed") == "gwg"
    close = chapter.share_lead(traces, ref, "relaxed", "gwg")
    far = chapter.share_lead(traces, ref, "relaxed", "alg2-restarts")
    assert close.value == pytest.approx(0.1) and close.low < 0.0 < close.high, "4 of 40 pairs: not resolved"
    assert far.value == pytest.approx(0.9) and far.excludes(0)
    summ = chapter.summaries(traces, ref, [1000.0], {})
    polished = chapter.polish_summary(_Trace(best_losses=torch.full((40,), 0.5), decoder_equivalents=400.0), ref)
    assert polished.share.value == 1.0 and polished.share.low < 1.0 and polished.equivalents == 10.0
    meets, text = chapter.verdict(summ, "relaxed", polished, [], 512, 1000.0, "gwg", close, far)
    assert meets  # every pair at R <= 1 and a median R of 0.52, at 1,000 equivalents and k = 512
    assert "100% [91%, 100%] of the pairs reach R <= 1" in text
    assert "exceeds the runner-up Gibbs" in text and "includes zero: not resolved" in text
    assert "exceeds Algorithm 2 with restarts's by 90% [" in text and "excludes zero" in text


def test_constrained_tasks_verdict_needs_every_task_inside_and_reads_the_paired_intervals():
    from vqtto.book.chapters.constrained_tasks import TaskVerdict, stays_real_verdict
    from vqtto.stats import Estimate

    def verdict(task, inside, causal):
        return TaskVerdict(task, 0.01, ["nn-mean"], [], [], True, causal, Estimate(inside, inside - 0.1, 1.0, 48),
                           Estimate(0.0, 0.0, 0.07, 48), "")

    ok, text = stays_real_verdict([verdict("inpainting, bottom-half", 0.95, Estimate(-0.02, -0.03, -0.01, 48)),
                                   verdict("super-resolution x2", 0.85, Estimate(0.001, -0.001, 0.002, 48))])
    assert not ok and "not every task reaches the 90% target" in text
    assert "better on inpainting, bottom-half; worse on no task; not resolved" in text
    ok, _ = stays_real_verdict([verdict("a", 0.9, Estimate(0.0, -1.0, 1.0, 48))])
    assert ok


def test_the_prior_weight_is_the_best_one_that_keeps_the_codes_real():
    from vqtto.book.chapters.constrained_tasks import choose_weight

    rows = [{"lambda": 0.0, "median MSE": 0.01, "inside real 95%": 0.0},
            {"lambda": 0.001, "median MSE": 0.02, "inside real 95%": 0.8},
            {"lambda": 0.003, "median MSE": 0.03, "inside real 95%": 0.96},
            {"lambda": 0.01, "median MSE": 0.04, "inside real 95%": 1.0}]
    assert choose_weight(rows, 0.95) == 0.003
    assert choose_weight(rows, 0.5) == 0.001
    assert choose_weight(rows[:2], 0.95) == 0.001  # none reaches the goal: the most inside

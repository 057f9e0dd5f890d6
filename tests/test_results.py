"""The results page reads the chapters' typed results and their verdicts; it decides nothing itself."""

import dataclasses
import re
import typing

import pytest

from vqtto.book import report, results_page as results
from vqtto.book.chapters.constrained_tasks import Lead, TaskVerdict
from vqtto.book.chapters.gradient_search import MethodMedian
from vqtto.book.chapters.hardness import HardnessResult
from vqtto.book.chapters.prior import Control
from vqtto.book.chapters.reaching_target import ExactRow, MethodSummary
from vqtto.stats import Estimate


def _fake(cls, **fields):
    """An instance of a result dataclass with every field zero-like except ``fields``."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in fields:
            continue
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            values[f.name] = _fake(tp)
        elif origin in (list, tuple):
            values[f.name] = []
        elif origin is dict:
            values[f.name] = {}
        elif tp in (int, float):
            values[f.name] = tp(0)
        elif tp is bool:
            values[f.name] = False
        elif tp is str:
            values[f.name] = ""
        else:
            values[f.name] = None
    return cls(**values, **fields)


def fake_results(profile="quick"):
    types = results.result_types()
    medians = [MethodMedian("source grid", "source", True, 20.0, 19.0, 21.0), MethodMedian("alg2, best grid", "alg2", True, 14.0, 13.0, 15.0),
               MethodMedian("alg3, best grid", "alg3", True, 19.0, 18.0, 20.0), MethodMedian("relaxed, best grid", "relaxed", True, 0.8, 0.7, 0.9),
               MethodMedian("alg1, decoded continuous latent", "alg1", False, 0.5, 0.4, 0.6)]
    sf = _fake(types["simplex_flow"], profile=profile, alg2_relative_loss_median=22.0, pulse_relative_loss_median=0.85,
               control_relative_loss_median=0.9, divergence_fraction={str(c): {"simplex": 0.0} for c in range(1, 5)},
               ks=[3, 8], seeds=3, n_pairs=16)
    sf.search_findings.prior_fitted = True
    sf.search_findings.relative_loss = {"pulse": Estimate(0.85, 0.8, 0.9, 16), "pulse-untrained": Estimate(0.9, 0.8, 1.0, 16),
                                        "alg2": Estimate(22.0, 20.0, 25.0, 16), "start": Estimate(30.0, 28.0, 33.0, 16)}
    gained = [Control("Algorithm 2, final grid", "search", "alg2", 0.6, 4.3, Estimate(0.8, 0.7, 0.9, 100),
                      Estimate(0.37, 0.28, 0.47, 100), 0.05),
              Control("relaxed search, best grid", "search", "relaxed", 0.7, 4.9, Estimate(1.4, 1.2, 1.6, 100),
                      Estimate(0.6, 0.5, 0.7, 100), 0.05)]
    return {
        "training": _fake(types["training"], profile=profile, dataset="fashion-mnist", k=40, k_reference=512, gap=0.001,
                          mse_reference=0.010, mse_small=0.011, paper_gap=0.002, comparable=True, agrees=True,
                          seed_gaps=[{}] * 3, relative_gap=0.1, relative_gap_std=0.02, not_flat=["k=40"]),
        "gradient_search": _fake(types["gradient_search"], profile=profile, loop_alg2=Estimate(0.96, 0.9, 0.99, 200),
                                 stalled_alg2=Estimate(0.04, 0.01, 0.1, 200), all_loop=False, n_pairs=200,
                                 table1={"fashion-mnist, k=512": {"mean": 80.0, "std": 50.0, "min": 2, "max": 270,
                                                                  "ended in a loop": "96% [90%, 99%]"}}, medians=medians),
        "prior": _fake(types["prior"], profile=profile, k=512, test_nats_per_position=3.5, log_k=6.2, fits=True, beyond_blends=True,
                       leaves_region=True, search_drift={"real": 3.5, "start": 3.5, "found": 4.3, "random": 14.7,
                                                         "tail": 0.05, "tail_fraction": 0.37},
                       tail_share=Estimate(0.37, 0.28, 0.47, 100), controls=gained),
        "paper_flow": _fake(types["paper_flow"], profile=profile, configurations=[1, 2, 3, 4], ks=[3, 8], seeds=3,
                            divergence_fraction={str(c): {"paper": 1.0} for c in range(1, 5)},
                            diverged_configurations=[1, 2, 3, 4], unstable_in_every_configuration=True),
        "simplex_flow": sf,
        "reaching_target": _fake(types["reaching_target"], profile=profile, n_pairs=8, k=512, best="relaxed",
                                 runner_up="gwg", lead_over_runner_up=Estimate(0.83, 0.5, 1.0, 8),
                                 summaries=[_fake(MethodSummary, method="relaxed", median_r=Estimate(0.77, 0.6, 0.9, 8),
                                                  share_r_le_1=Estimate(0.83, 0.47, 0.97, 8)),
                                            _fake(MethodSummary, method="gwg", median_r=Estimate(5.2, 4.0, 6.0, 8),
                                                  share_r_le_1=Estimate(0.0, 0.0, 0.32, 8))],
                                 exact=[ExactRow(2, 40, "gwg", Estimate(0.5, 0.28, 0.72, 16), 0.01, 16, 1600)],
                                 certified_share=Estimate(1.0, 0.34, 1.0, 2)),
        "constrained_tasks": _fake(types["constrained_tasks"], profile=profile, n_pairs=48, stays_real="the prior's verdict",
                                   verdicts=[TaskVerdict("inpainting, bottom-half", 0.01, ["nn-mean"],
                                                         [Lead("relaxed-prior", "nn-mean", Estimate(-0.004, -0.007, -0.001, 48))],
                                                         ["relaxed-prior"], True, Estimate(-0.01, -0.02, -0.003, 48),
                                                         Estimate(0.94, 0.83, 0.98, 48), Estimate(0.6, 0.46, 0.73, 48), ""),
                                             TaskVerdict("super-resolution x4", 0.001, ["nearest-neighbour", "bilinear"],
                                                         [Lead("relaxed-prior", "nearest-neighbour", Estimate(0.01, 0.005, 0.02, 48)),
                                                          Lead("relaxed-prior", "bilinear", Estimate(-0.001, -0.003, 0.001, 48))],
                                                         [], False, Estimate(0.0, -0.002, 0.002, 48),
                                                         Estimate(0.7, 0.56, 0.81, 48), Estimate(0.1, 0.04, 0.22, 48), "")]),
        "hardness": _fake(HardnessResult, profile=profile, verdict="the claim holds, by a reduction", reduction_holds=True,
                          exact_shares={"alg2 α=1": Estimate(0.12, 0.05, 0.27, 320),
                                        "local-search": Estimate(0.6, 0.45, 0.73, 320)}),
    }


def _by_claim(rows):
    return {r["claim (paper section)"]: r for r in rows}


def test_rows_read_the_chapters_verdicts_and_numbers(tmp_path):
    for r in fake_results().values():
        report.record(r, tmp_path)
    rows = _by_claim(results.claims(results.load_all("quick", tmp_path)))
    gap = next(r for c, r in rows.items() if "costs little" in c)
    assert gap["verdict"].startswith("agrees") and "+0.0010" in gap["ours"]
    assert next(r for c, r in rows.items() if "unstable in all four" in c)["verdict"] == "agrees"
    best = next(r for c, r in rows.items() if c.startswith("best search"))
    assert best["verdict"].startswith("lowest median: relaxed (ch. 3, equal budget)")
    assert "alg1" not in best["ours"], "Algorithm 1's continuous latent is no grid"
    assert next(r for c, r in rows.items() if "NP-hard" in c)["verdict"] == "the claim holds, by a reduction"
    relaxed = next(r for c, r in rows.items() if c.endswith("relaxed straight-through search"))
    assert relaxed["verdict"].startswith("best method of the chapter") and "excludes zero" in relaxed["verdict"]
    assert "83% [47%, 97%] of 8 pairs" in relaxed["ours"] and "median R 0.77 [0.6, 0.9]" in relaxed["ours"]
    gap = next(r for c, r in rows.items() if "costs little" in c)
    assert gap["verdict"].endswith("the curves of k=40 had not flattened")


# A share written without its interval: a percentage not followed by its bracketed interval, leaving out
# signed relative changes ("+10.0% ± 2.0%") and levels ("the least likely 5%", "95% interval").
def _bare_shares(text):
    text = re.sub(r"\d+(?:\.\d+)?% \[[^\]]*\]", "SHARE", text)
    text = re.sub(r"[+±-] ?\d+(?:\.\d+)?%|least likely \d+%|95% interval|central 95%", "", text)
    return re.findall(r"\d+(?:\.\d+)?%", re.sub(r"\[[^\]]*\]", "", text))


def test_every_share_and_median_on_the_page_shows_its_interval():
    rows = results.claims(fake_results())
    bare = {r["claim (paper section)"]: _bare_shares(r["ours"]) for r in rows}
    assert not any(bare.values()), {c: b for c, b in bare.items() if b}
    text = {r["claim (paper section)"]: r["ours"] for r in rows}
    fake = fake_results()
    medians = results.search_medians(fake["gradient_search"], fake["simplex_flow"], fake["reaching_target"])
    best = next(t for c, t in text.items() if c.startswith("best search"))
    for label, (_, v) in medians.items():
        assert f"{label}: {v.text()}" in best and v.low <= v.value <= v.high
    assert "through the trained flow" in text["searching through a flow prior keeps the codes plausible (5.4, 6)"]
    assert "0.85 [0.8, 0.9] through the trained flow" in text["searching through a flow prior keeps the codes plausible (5.4, 6)"]
    assert "relaxed search, best grid 1.40 [1.20, 1.60]" in next(t for c, t in text.items() if "leaves the prior" in c)
    assert "37% [28%, 47%] of final grids" in next(t for c, t in text.items() if "leaves the prior" in c)
    assert "alg2 α=1 12% [5%, 27%]" in next(t for c, t in text.items() if "NP-hard" in c)
    assert "(1) 100% [" in next(t for c, t in text.items() if "Gumbel-softmax flow" in c)
    assert "gwg 50% [28%, 72%] of 16 pairs" in next(t for c, t in text.items() if "best grid where it can be known" in c)


def test_the_best_search_verdict_names_the_searches_it_cannot_be_told_from():
    fake = fake_results()
    verdict = results.search_rows(fake["gradient_search"], fake["simplex_flow"], fake["reaching_target"])[0]["verdict"]
    assert verdict.startswith("lowest median: relaxed (ch. 3, equal budget); not separable from")
    assert "relaxed, best grid (ch. 2)" in verdict and "gwg" not in verdict


def test_the_task_rows_read_the_task_verdicts():
    rows = _by_claim(results.task_rows(fake_results()["constrained_tasks"]))
    solves = next(r for c, r in rows.items() if "solves tasks" in c)
    assert solves["verdict"] == "shown on inpainting, bottom-half (relaxed-prior); not on the other tasks"
    assert ("super-resolution x4: minus nearest-neighbour +0.0100 [+0.0050, +0.0200], minus bilinear -0.0010 "
            "[-0.0030, +0.0010]") in solves["ours"]
    stays = next(r for c, r in rows.items() if "high-probability" in c)
    assert stays["verdict"] == "the prior's verdict" and "inside 94% [83%, 98%] vs 60% [46%, 73%]" in stays["ours"]
    fake = fake_results()["constrained_tasks"]
    fake.verdicts[0].winners = []
    assert results.task_rows(fake)[0]["verdict"].startswith("not shown")


def test_the_interval_check_catches_a_bare_share():
    assert _bare_shares("83% of 8 pairs") == ["83%"]
    assert _bare_shares("83% [47%, 97%] of 8 pairs, +10.0% ± 2.0%, the least likely 5%") == []
    assert _bare_shares("96% [90%, 99%] loops, 4% stalled") == ["4%"]


def test_verdicts_follow_the_recorded_decision_not_a_second_rule():
    fake = fake_results()
    fake["training"].agrees, fake["training"].comparable = None, False  # e.g. the smoke profile's 32 -> 8
    assert results.training_rows(fake["training"])[0]["verdict"].startswith("not comparable")
    fake["training"].agrees = False
    assert results.training_rows(fake["training"])[0]["verdict"].startswith("does not agree")
    fake["prior"].leaves_region = False
    assert results.prior_rows(fake["prior"])[1]["verdict"] == "not shown by this run"
    fake["paper_flow"].unstable_in_every_configuration, fake["paper_flow"].diverged_configurations = False, [1, 3, 4]
    flow = results.flow_rows(fake["paper_flow"], fake["simplex_flow"])[0]["verdict"]
    assert flow == "partly: unstable in 3 of 4 configurations"


def test_the_search_verdict_names_the_best_paper_search_and_ours():
    fake = fake_results()
    text = results.search_verdict(fake["gradient_search"], fake["simplex_flow"])
    assert text.startswith("At step size alpha = 0, the best of the paper's straight-through searches ends at 14 [13, 15] times")
    assert "relaxed, best grid (ch. 2), ends at 0.8 [0.7, 0.9] (17.5x lower; the two intervals do not overlap)" in text


def test_links_point_at_chapter_documents_not_anchors():
    link = results.link("hardness")
    assert link.endswith("_hardness.ipynb)") and "#" not in link


def test_missing_or_other_profile_results_are_named(tmp_path):
    fake = fake_results()
    for name, r in fake.items():
        if name != "prior":
            report.record(r, tmp_path)
    report.record(fake_results("smoke")["paper_flow"], tmp_path)
    with pytest.raises(report.MissingResults, match=r"\['prior', 'paper_flow'\]"):
        results.load_all("quick", tmp_path)


def test_the_glance_table_sorts_the_recorded_verdicts_into_badges():
    rows = results.glance(fake_results())
    by = {r["claim"]: r for r in rows}
    assert len(rows) <= 14, "one short row per claim"
    assert next(r for c, r in by.items() if "k=512 → 40" in c)["badge"] == "agrees"
    assert next(r for c, r in by.items() if "ends in a loop" in c)["badge"] == "partly"  # all_loop=False
    assert next(r for c, r in by.items() if "unstable" in c)["badge"] == "agrees"
    tasks = next(r for c, r in by.items() if "solves tasks" in c)
    assert tasks["badge"] == "partly" and tasks["ours"] == "1 of 2 tasks beat the anchors"
    assert all(r["badge"] in results.BADGES and r["rows"] for r in rows), "every claim keeps its long rows"


def test_the_glance_keeps_every_long_row_and_shows_intervals():
    fake = fake_results()
    long = [r for g in results.glance(fake) for r in g["rows"]]
    assert long == results.claims(fake), "the collapsed details hold every row of the long table, in order"
    rows = results.glance(fake)
    assert next(r for r in rows if "heuristic" in r["claim"])["ours"] == "83% [47%, 97%] at R ≤ 1 (relaxed)"
    for r in rows:
        assert not _bare_shares(r["ours"]), r["ours"]


def test_the_glance_html_has_badges_links_and_collapsed_details():
    rows = results.glance(fake_results())
    table = results.glance_html(rows)
    assert table.count("<tr>") == len(rows) + 1 and 'class="vqtto-table vqtto-summary"' in table
    assert 'class="vqtto-badge vqtto-badge-partly">partly</span>' in table
    assert 'href="01_training.html">1</a>' in table and 'href="07_hardness.html">7</a>' in table
    detail = results.details_html(rows)
    assert detail.count("<details") == len(rows) and " open" not in detail
    assert "the curves of k=40 had not flattened" in detail


def test_a_badge_outside_the_known_kinds_is_refused():
    with pytest.raises(ValueError, match="badge must be one of"):
        results._glance("c", "p", "o", "maybe", "training", [])

import json

import pytest

from vqtto import results

FAKE = {
    "training": {"dataset": "fashion-mnist", "k": 40, "k_reference": 512, "gap": 0.001, "mse_reference": 0.010,
                 "mse_small": 0.011, "paper_gap": 0.002},
    "gradient_search": {"table1": {"fashion-mnist, k=512": {"mean": 80.0, "std": 50.0, "min": 2, "max": 270,
                                                             "ended in a loop": "96%"}},
                        "loop_fraction_alg2": 0.96, "stalled_fraction_alg2": 0.04,
                        "relative_loss_median": {"alg2, best grid": 14.0, "alg3, best grid": 19.0,
                                                 "improved, best grid": 0.8, "source grid": 20.0}},
    "prior": {"k": 512, "test_nats_per_position": 3.5, "log_k": 6.2, "test_bits_per_image": 250.0,
              "uniform_bits_per_image": 441.0,
              "search_drift": {"real": 3.5, "start": 3.5, "found": 4.3, "random": 14.7, "tail": 0.05, "tail_fraction": 0.37}},
    "flows": {"divergence_fraction": {str(c): {"paper": 1.0, "simplex": 0.0} for c in range(1, 5)},
              "alg2_relative_loss_median": 22.0, "pulse_relative_loss_median": 0.85},
    "hardness": {"map_error": 1e-15, "optimum_matches": True,
                 "searches": {"alg2 α=1": {"fraction_exact": 0.01, "mean_ratio": 0.8}}},
}


def _write(folder, profile="quick", skip=()):
    for chapter, data in FAKE.items():
        if chapter not in skip:
            (folder / f"{chapter}.json").write_text(json.dumps({**data, "profile": profile}))


def test_claims_are_computed_from_the_recorded_numbers(tmp_path):
    _write(tmp_path)
    rows = results.claims(results.load_all("quick", tmp_path))
    by_claim = {r["claim (paper section)"]: r for r in rows}
    gap = next(r for c, r in by_claim.items() if "costs little" in c)
    assert gap["verdict"].startswith("agrees") and "+0.0010" in gap["ours"]
    flow = next(r for c, r in by_claim.items() if "unstable in all four" in c)
    assert flow["verdict"] == "agrees"
    best = next(r for c, r in by_claim.items() if c.startswith("best search"))
    assert best["verdict"].endswith("improved, best grid (ch. 2)")
    assert "17.5x lower" in results.search_verdict(FAKE["gradient_search"], FAKE["flows"])


def test_verdicts_turn_when_the_numbers_do(tmp_path):
    FAKE_BAD = json.loads(json.dumps(FAKE))
    FAKE_BAD["training"]["gap"] = 0.01
    FAKE_BAD["flows"]["divergence_fraction"]["2"]["paper"] = 0.0
    FAKE_BAD["hardness"]["optimum_matches"] = False
    rows = {r["claim (paper section)"][:25]: r["verdict"] for r in [
        *results.training_rows(FAKE_BAD["training"]), *results.flow_rows(FAKE_BAD["flows"]),
        *results.hardness_rows(FAKE_BAD["hardness"])]}
    assert any(v.startswith("does not agree") for v in rows.values())
    assert any(v.startswith("partly: unstable in 3 of 4") for v in rows.values())
    assert any(v == "the reduction check failed" for v in rows.values())


def test_missing_or_other_profile_results_are_named(tmp_path):
    _write(tmp_path, skip=("prior",))
    (tmp_path / "flows.json").write_text(json.dumps({**FAKE["flows"], "profile": "smoke"}))
    with pytest.raises(results.MissingResults, match=r"\['prior', 'flows'\]"):
        results.load_all("quick", tmp_path)

"""Typed chapter results: written atomically, read back as the same type, refused when stale."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from vqtto.book import report


@dataclass
class Inner:
    method: str
    median: float


@dataclass
class DemoResult(report.ChapterResult):
    CHAPTER: ClassVar[str] = "demo"
    k: int
    medians: list[Inner]
    verdict: str
    agrees: bool | None


def test_a_result_round_trips_with_nested_types(tmp_path):
    r = DemoResult(profile="smoke", k=8, medians=[Inner("alg2", 1.5)], verdict="fine", agrees=None)
    path = report.record(r, tmp_path)
    assert path.name == "demo.json" and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    back = report.load_result(DemoResult, "smoke", tmp_path)
    assert back == r and isinstance(back.medians[0], Inner)


def test_other_profile_missing_or_mismatched_files_are_refused(tmp_path):
    with pytest.raises(report.MissingResults, match="no results of chapter 'demo'"):
        report.load_result(DemoResult, "smoke", tmp_path)
    report.record(DemoResult(profile="quick", k=8, medians=[], verdict="", agrees=True), tmp_path)
    with pytest.raises(report.MissingResults, match="'quick'-profile results, not 'smoke'"):
        report.load_result(DemoResult, "smoke", tmp_path)
    (tmp_path / "demo.json").write_text('{"type": "DemoResult", "profile": "smoke", "kk": 1}')
    with pytest.raises(report.MissingResults, match="does not match DemoResult"):
        report.load_result(DemoResult, "smoke", tmp_path)


def test_record_takes_only_typed_results(tmp_path):
    with pytest.raises(TypeError, match="ChapterResult"):
        report.record({"k": 1}, tmp_path)

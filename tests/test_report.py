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


def test_pivot_puts_one_value_per_row_and_column_and_marks_the_gaps():
    rows = [{"m": "a", "t": "x", "v": 1}, {"m": "a", "t": "y", "v": 2}, {"m": "b", "t": "x", "v": 3}]
    assert report.pivot(rows, "m", "t", "v") == [{"m": "a", "x": 1, "y": 2}, {"m": "b", "x": 3, "y": "-"}]
    with pytest.raises(ValueError, match="two rows with m='a' and t='x'"):
        report.pivot(rows + [{"m": "a", "t": "x", "v": 9}], "m", "t", "v")
    with pytest.raises(ValueError, match="value='w' is not a key"):
        report.pivot(rows, "m", "t", "w")


def test_long_table_writes_the_csv_next_to_the_results_and_collapses_the_rows(tmp_path):
    import csv

    rows = [{"task": "a, b", "MSE": 0.0123456, "note": "<x>"}, {"task": "c", "MSE": 1.5, "note": ""}]
    shown = report.long_table(rows, "demo", "methods", tmp_path)
    back = list(csv.DictReader((tmp_path / "demo-methods.csv").open()))
    assert back == [{"task": "a, b", "MSE": "0.01235", "note": "<x>"}, {"task": "c", "MSE": "1.5", "note": ""}]
    assert shown.data.startswith('<details class="vqtto-details"><summary>The full table: 2 rows x 3 columns')
    assert "&lt;x&gt;" in shown.data and "<x>" not in shown.data, "cells are escaped"
    with pytest.raises(ValueError, match="name must be letters"):
        report.long_table(rows, "demo", "../evil", tmp_path)
    with pytest.raises(ValueError, match="rows must not be empty"):
        report.long_table([], "demo", "empty", tmp_path)

"""Every chapter parameter is bounded by what it means, and validation refuses what lies outside.

The wrong values are generated from each parameter's declared type and check (the checks expose their
bounds), not listed by hand: negative, zero where excluded, below and beyond each bound (the profile's
limit for a count or budget), the wrong type, None where not nullable, an empty list, a list with a
wrong item or too many items. No chapter runs: this is the schema check alone.
"""

from __future__ import annotations

import math

import pytest

from vqtto import book
from vqtto.params import (Check, Device, Each, Grid, NonEmpty, OneOf, Param, ParameterError, PathName, Range, Work,
    between, defaults, each, validate, work)
from vqtto.models.profiles import PROFILES

CHAPTERS = book.chapter_names()
_WRONG_TYPE = {int: ["x", 1.5, True, [1]], float: ["x", True, [1.0]], str: [5, ["a"]], list: [5, {"a": 1}],
               bool: [1, "yes"]}


class Unbounded(Exception):
    """A parameter whose check cannot yield a value beyond its range (a number without an upper bound...)."""


def _int(kind: type) -> bool:
    return kind is int


def _from_range(lo: float, lo_open: bool, hi: float, kind: type) -> list:
    """Values outside ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``) of ``kind``: below, at an open lo, above, huge, -1, 0."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise Unbounded(f"range [{lo}, {hi}] has an infinite bound")
    out = [lo - 1 if _int(kind) else lo - max(1.0, abs(lo)), hi + 1 if _int(kind) else hi + abs(hi) * 0.01 + 1e-9,
           10**12 if _int(kind) else 1e12]
    if lo_open:
        out.append(kind(lo))
    if lo > -1 or (lo == -1 and lo_open):
        out.append(kind(-1))
    if lo > 0 or (lo == 0 and lo_open):
        out.append(kind(0))
    return [v for v in out if not (v <= hi and (v > lo or (v == lo and not lo_open)))]  # only values outside


def _valid_item(check: Check, default: list):
    if default:
        return default[0]
    if isinstance(check, (Range, Work)):
        return check.lo if not check.lo_open else check.lo + 1
    if isinstance(check, OneOf):
        return check.allowed[0]
    raise Unbounded(f"no valid item known for {check!r}")


def wrong_values(check, kind: type, default, profile: str) -> list:
    """Values ``check`` must refuse under ``profile``, generated from its bounds alone."""
    if check is None:
        raise Unbounded("no check")
    if isinstance(check, Range):
        return _from_range(check.lo, check.lo_open, check.hi, kind)
    if isinstance(check, Work):
        return _from_range(check.lo, check.lo_open, check.hi(profile), kind)
    if isinstance(check, OneOf):
        if kind is str:
            return ["no-such-choice", ""]
        return [max(check.allowed) + 1, min(check.allowed) - 1]
    if isinstance(check, Device):
        return ["no-such-device", "cuda:x", ""]
    if isinstance(check, PathName):
        return ["", "a\0b", "x" * (check.most + 1)]
    if isinstance(check, Grid):
        out = [[0, check.lo], [1], [1, 1, 1], ["a", check.lo], [check.hi + 1, 1], [1.5, 2]]
        return out + ([[1, check.lo - 1]] if check.lo > 1 else [])
    if isinstance(check, NonEmpty):
        return [[]] + wrong_values(check.inner, kind, default, profile)
    if isinstance(check, Each):
        items = wrong_values(check.item, check.kind, None, profile)
        items += _WRONG_TYPE[check.kind] + [None]
        valid = _valid_item(check.item, default or [])
        out = [[valid, w] if check.length == 2 else [w] for w in items]
        out.append([valid] * ((check.length or check.most) + 1))
        if check.length:
            out.append([valid] * (check.length - 1))
        return out
    raise Unbounded(f"{check!r} is not a vqtto.params.Check, so its bounds are unknown")


def _wrong_for_param(spec: Param, profile: str) -> list:
    from_check = wrong_values(spec.check, spec.kind, spec.default, profile) if spec.kind is not bool else []
    return from_check + _WRONG_TYPE[spec.kind] + ([] if spec.nullable else [None])


def _base(chapter: str, profile: str) -> dict:
    return {**defaults(book.schema(chapter)), **book.profile_params(profile, chapter)}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_generated_wrong_value_is_refused_naming_the_parameter(chapter, profile):
    schema, base = book.schema(chapter), _base(chapter, profile)
    validate(base, schema)  # the profile's own values pass
    accepted, unnamed, unbounded, tried = [], [], [], 0
    for name, spec in schema.items():
        if name == "profile":
            continue
        try:
            values = _wrong_for_param(spec, profile)
        except Unbounded as why:
            unbounded.append(f"{name}: {why}")
            continue
        for value in values:
            tried += 1
            try:
                validate({**base, name: value}, schema)
                accepted.append(f"{name}={value!r}")
            except ParameterError as err:
                if f"'{name}'" not in str(err):
                    unnamed.append(f"{name}={value!r}: {err}")
    assert not unbounded, f"{chapter}: parameters with no generated wrong value (bound them): {unbounded}"
    assert not accepted, f"{chapter} ({profile}) accepted: {accepted}"
    assert not unnamed, f"{chapter} ({profile}) refused without naming the parameter: {unnamed}"
    assert tried >= 5 * (len(schema) - 1)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_number_has_both_bounds_and_shares_lie_in_zero_one(chapter):
    """A numeric parameter (or list item) needs a finite upper bound; a parameter named a share is in [0, 1]."""
    def ranges(check):
        if isinstance(check, (Range, Work)):
            yield check
        for inner in (getattr(check, "inner", None), getattr(check, "item", None)):
            if inner is not None:
                yield from ranges(inner)

    for name, spec in book.schema(chapter).items():
        for r in ranges(spec.check):
            hi = r.hi if isinstance(r, Range) else max(r.limits.values())
            assert math.isfinite(r.lo) and math.isfinite(hi), f"{chapter}.{name} is unbounded"
            if isinstance(r, Work):
                assert set(r.limits) == set(PROFILES), f"{chapter}.{name}: a limit for every profile"
                assert r.limits["smoke"] <= r.limits["quick"] <= r.limits["full"], f"{chapter}.{name}"
        if "share" in name or name in ("val_inside", "edge_p"):
            assert spec.check.lo >= 0 and spec.check.hi <= 1, f"{chapter}.{name} is a share: [0, 1]"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_profiles_values_and_the_defaults_pass_the_bounds(chapter):
    schema = book.schema(chapter)
    for profile in PROFILES:
        assert validate(_base(chapter, profile), schema).profile == profile
    assert validate(defaults(schema), schema).profile == "quick"


def test_the_walk_catches_an_unbounded_parameter_and_a_check_it_cannot_read():
    """The guard itself: a new parameter declared with no upper bound, or with a plain function, fails the walk."""
    with pytest.raises(Unbounded, match="infinite"):
        _wrong_for_param(Param(int, "pairs", Range(1, float("inf")), default=4), "smoke")
    with pytest.raises(Unbounded, match="not a vqtto.params.Check"):
        _wrong_for_param(Param(float, "noise", lambda v: None, default=0.5), "smoke")
    with pytest.raises(Unbounded, match="no check"):
        _wrong_for_param(Param(str, "folder", default="x"), "smoke")
    bounded = _wrong_for_param(Param(list, "budgets", each(work(0.0, smoke=10.0, quick=100.0, full=1000.0,
                                                                    lo_open=True), float, most=3), default=[5.0]),
                               "smoke")
    assert [11.0] not in bounded and [10.1 + 1e-9] in bounded and [0.0] in bounded and [5.0] * 4 in bounded
    assert _wrong_for_param(Param(int, "k", between(2, 8), default=4), "full")[:2] == [1, 9]


@pytest.mark.parametrize("chapter,name,value,says", [
    ("08_constrained_tasks", "val_inside", 1e12, r"in \[0, 1\]"),
    ("08_constrained_tasks", "temperature", 1e12, r"in \(0, 10\]"),
    ("03_reaching_target", "restart_noise", 1e12, r"in \[0, 10\]"),
    ("03_reaching_target", "sub_budget", 1e12, r"at most 600 .* would take about [\d.e+]+ years"),
    ("08_constrained_tasks", "budget", 1e12, r"at most 600 .* would take about [\d.e+]+ years"),
    ("04_prior", "temperatures", [1.0, 1e12], r"in \(0, 10\]"),
])
def test_the_values_the_issue_found_accepted_are_refused_under_smoke(chapter, name, value, says):
    with pytest.raises(ParameterError, match=rf"'{name}' must be .*{says}"):
        validate({**_base(chapter, "smoke"), name: value}, book.schema(chapter))

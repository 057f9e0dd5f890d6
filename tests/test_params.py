import pytest

from vqtto.params import Param, ParameterError, between, each, one_of, validate, work

SCHEMA = {
    "dataset": Param(str, "data set", one_of("fashion-mnist", "cifar10")),
    "k": Param(int, "codebook size", between(2, 4096)),
    "alpha": Param(float, "step size", between(0.0, 10.0)),
    "ks": Param(list, "sizes", each(between(2, 4096), most=3)),
    "epochs": Param(int, "epochs", work(1, smoke=2, quick=20, full=200), nullable=True),
}
GOOD = {"dataset": "cifar10", "k": 40, "alpha": 1, "ks": [4, 8], "epochs": None}


def test_valid_namespace_passes_and_ignores_modules_and_private_names():
    import math

    ns = {**GOOD, "math": math, "_hidden": 1, "In": [], "helper": lambda: 0}
    p = validate(ns, SCHEMA)
    assert p.k == 40 and p.alpha == 1.0 and isinstance(p.alpha, float) and p.epochs is None


def test_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['alpah'\].*alpha"):
        validate({**GOOD, "alpah": 0.1}, SCHEMA)


@pytest.mark.parametrize("name,value,msg", [
    ("dataset", "mnist", "one of"),
    ("k", 1, r"in \[2, 4096\]"),
    ("alpha", 10.5, r"in \[0, 10\]"),
    ("k", "40", "must be int"),
    ("k", True, "must be int"),
    ("ks", [4, 1], "items"),
    ("ks", [4, 8, 16, 32], "at most 3 items"),
    ("epochs", 0, r"in \[1, limit\]"),
])
def test_bad_values_name_the_parameter(name, value, msg):
    with pytest.raises(ParameterError, match=f"'{name}'.*{msg}"):
        validate({**GOOD, name: value}, SCHEMA)


def test_list_passed_as_string_by_papermill_p_is_parsed():
    assert validate({**GOOD, "ks": "[512, 40]"}, SCHEMA).ks == [512, 40]


def test_missing_parameter_is_reported():
    ns = dict(GOOD)
    del ns["k"]
    with pytest.raises(ParameterError, match="'k'"):
        validate(ns, SCHEMA)


def test_parameters_cell_is_generated_from_the_schema_with_types_defaults_and_help():
    from vqtto.params import chapter_schema, parameters_cell

    schema = chapter_schema({"k": Param(int, "codebook size", between(2, 4096), default=40),
                             "alphas": Param(list, "steps", each(between(0.0, 10.0), float, most=4), default=[0.1, 1.0]),
                             "epochs": Param(int, "epochs", work(1, smoke=2, quick=20, full=200), nullable=True,
                                             default=None)})
    cell = parameters_cell(schema).splitlines()
    assert cell[0].startswith('profile: str = "quick"') and cell[-1].startswith('device: str = "auto"')
    assert any(line.startswith("k: int = 40") and line.endswith("# codebook size [in [2, 4096]]") for line in cell)
    assert any(line.startswith("epochs: ") and line.endswith("limits: smoke 2, quick 20, full 200]") for line in cell)
    assert any(line.startswith('epochs: "Optional[int]" = None') for line in cell)
    assert any(line.startswith("alphas: list = [0.1, 1.0]") for line in cell)


def test_a_schema_without_a_default_cannot_make_a_cell():
    from vqtto.params import parameters_cell

    with pytest.raises(ValueError, match=r"\['k'\] have no default"):
        parameters_cell({"k": Param(int, "codebook size")})


def test_shared_parameters_are_added_once_and_not_redefined():
    from vqtto.params import chapter_schema

    assert list(chapter_schema({}, device=False)) == ["profile"]
    with pytest.raises(ValueError, match="shared parameters"):
        chapter_schema({"device": Param(str, "mine", default="cpu")})


@pytest.mark.parametrize("chapter,name", [("02_gradient_search", "sweep_alphas"), ("02_gradient_search", "datasets"),
                                          ("04_prior", "temperatures")])
def test_empty_lists_that_would_leave_a_section_silently_empty_are_refused(chapter, name):
    from vqtto import book
    from vqtto.params import defaults

    schema = book.schema(chapter)
    with pytest.raises(ParameterError, match=rf"'{name}' must be a non-empty list"):
        validate({**defaults(schema), name: []}, schema)


def test_dead_helpers_are_gone():
    """Names the review found unused (they had drifted from what the chapters do)."""
    from vqtto import params
    from vqtto.book import plots

    assert not hasattr(params, "describe") and not hasattr(plots, "k_colors")
    assert not hasattr(params.Namespace, "as_dict")


def test_a_count_beyond_what_the_profile_finishes_is_refused_with_its_limit_and_estimated_time():
    schema = {"profile": Param(str, "profile", one_of("smoke", "quick", "full")), **SCHEMA}
    ok = {**GOOD, "profile": "smoke", "epochs": 2}
    assert validate(ok, schema).epochs == 2
    with pytest.raises(ParameterError) as err:
        validate({**ok, "epochs": 4}, schema)
    msg = str(err.value)
    # the name, the value, the profile's limit, the estimated time (4 / 2 of smoke's 5 min) and the larger limits
    assert "'epochs'" in msg and "got 4" in msg and "at most 2" in msg and "about 10 min" in msg
    assert "quick 20, full 200" in msg
    assert validate({**ok, "profile": "quick", "epochs": 4}, schema).epochs == 4


def test_the_profile_limit_applies_to_each_item_of_a_list_of_budgets():
    schema = {"profile": Param(str, "profile", one_of("smoke", "full")),
              "budgets": Param(list, "budgets", each(work(0.0, smoke=10.0, quick=100.0, full=1000.0, lo_open=True),
                                                     float, most=4))}
    assert validate({"profile": "full", "budgets": [5.0, 500.0]}, schema).budgets == [5.0, 500.0]
    with pytest.raises(ParameterError, match=r"'budgets'.*at most 10 .*about 4.17 h"):
        validate({"profile": "smoke", "budgets": [5.0, 500.0]}, schema)
    with pytest.raises(ParameterError, match=r"'budgets'.*\(0, "):
        validate({"profile": "full", "budgets": [0.0]}, schema)

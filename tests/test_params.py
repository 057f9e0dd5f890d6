import pytest

from vqtto.params import Param, ParameterError, at_least, each, one_of, validate

SCHEMA = {
    "dataset": Param(str, "data set", one_of("fashion-mnist", "cifar10")),
    "k": Param(int, "codebook size", at_least(2)),
    "alpha": Param(float, "step size", at_least(0.0)),
    "ks": Param(list, "sizes", each(at_least(2))),
    "epochs": Param(int, "epochs", at_least(1), nullable=True),
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
    ("k", 1, ">= 2"),
    ("k", "40", "must be int"),
    ("k", True, "must be int"),
    ("ks", [4, 1], "items"),
    ("epochs", 0, ">= 1"),
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

    schema = chapter_schema({"k": Param(int, "codebook size", at_least(2), default=40),
                             "alphas": Param(list, "steps", each(at_least(0.0), float), default=[0.1, 1.0]),
                             "epochs": Param(int, "epochs", at_least(1), nullable=True, default=None)})
    cell = parameters_cell(schema).splitlines()
    assert cell[0].startswith('profile: str = "quick"') and cell[-1].startswith('device: str = "auto"')
    assert any(line.startswith("k: int = 40") and line.endswith("# codebook size") for line in cell)
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
    from vqtto import params, plots

    assert not hasattr(params, "describe") and not hasattr(plots, "k_colors")
    assert not hasattr(params.Namespace, "as_dict")

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

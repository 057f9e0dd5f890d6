"""Validation of a chapter's papermill parameters.

A chapter's first code cell holds its parameters (papermill tag ``parameters``); papermill
injects the caller's values in the cell after it. Papermill itself only *warns* about a name
the notebook does not define, so a typo such as ``-p alpah 0.1`` would run with the default.
:func:`validate` closes that hole: it reads every user-level name in the notebook's namespace,
rejects any it does not know, and checks each value against its :class:`Param` rule.

Lists arrive as strings with ``-p`` (``-p ks "[512, 40]"``); pass them with ``-y`` or ``-f``
YAML instead. :func:`validate` also accepts such a string and parses it as YAML, so both work.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

# Names IPython puts into every kernel namespace.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


class ParameterError(ValueError):
    """A chapter parameter has an unknown name or a value outside what is allowed."""


_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    """One chapter parameter: its type, default, a one-line description and an optional check.

    This is the only place a parameter is written: the notebook's parameters cell is generated
    from it (:func:`parameters_cell`; ``python -m vqtto.book sync-params`` rewrites the cells and a
    test checks they match), so type, default and help cannot drift apart.

    ``check`` returns None when the value is fine, or a phrase saying what is allowed.
    """

    kind: type | tuple[type, ...]
    help: str
    check: Callable[[Any], str | None] | None = None
    nullable: bool = False
    default: Any = _NO_DEFAULT

    def type_annotation(self) -> str:
        """The annotation of the parameters cell (what ``papermill --help-notebook`` shows as the type)."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        name = kinds[0].__name__ if len(kinds) == 1 else "Union[" + ", ".join(k.__name__ for k in kinds) + "]"
        return f'"Optional[{name}]"' if self.nullable else name


def one_of(*allowed: Any) -> Callable[[Any], str | None]:
    """A check accepting exactly the listed values."""
    return lambda v: None if v in allowed else f"one of {list(allowed)}"


def at_least(lo: float) -> Callable[[Any], str | None]:
    """A check accepting numbers >= lo."""
    return lambda v: None if v >= lo else f">= {lo}"


def greater_than(lo: float) -> Callable[[Any], str | None]:
    """A check accepting numbers > lo."""
    return lambda v: None if v > lo else f"> {lo}"


def between(lo: float, hi: float) -> Callable[[Any], str | None]:
    """A check accepting numbers in [lo, hi]."""
    return lambda v: None if lo <= v <= hi else f"in [{lo}, {hi}]"


def nonempty(check: Callable[[Any], str | None] | None = None) -> Callable[[Any], str | None]:
    """A check refusing an empty list (an empty sweep would leave a section of the chapter silently empty)."""

    def _check(values: list) -> str | None:
        if not values:
            return "a non-empty list"
        return check(values) if check is not None else None

    return _check


def each(check: Callable[[Any], str | None], item_kind: type = int) -> Callable[[Any], str | None]:
    """A check for a list whose every item has ``item_kind`` and passes ``check``."""

    def _check(values: list) -> str | None:
        for v in values:
            if not isinstance(v, item_kind) or isinstance(v, bool) and item_kind is not bool:
                return f"a list of {item_kind.__name__}"
            msg = check(v)
            if msg is not None:
                return f"a list whose items are each {msg}"
        return None

    return _check


def _device_check(value: str) -> str | None:
    return None if value in ("auto", "cpu", "cuda") or value.startswith("cuda:") else "auto, cpu, cuda or cuda:N"


def _profile_param() -> Param:
    from .profiles import PROFILES

    return Param(str, "model presets shared by all chapters: " + " | ".join(PROFILES), one_of(*PROFILES),
                 default="quick")


DEVICE = Param(str, "auto | cpu | cuda (auto: CUDA when present)", _device_check, default="auto")


def chapter_schema(params: Mapping[str, Param], *, device: bool = True) -> dict[str, Param]:
    """A chapter's full schema: the shared ``profile`` first, its own ``params``, the shared ``device`` last."""
    shared = {"profile", "device"} & set(params)
    if shared:
        raise ValueError(f"{sorted(shared)} are shared parameters; chapter_schema adds them itself")
    return {"profile": _profile_param(), **params, **({"device": DEVICE} if device else {})}


class Namespace(types.SimpleNamespace):
    """Validated parameters, read as attributes (``P.k``)."""


def _user_names(namespace: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _KERNEL_NAMES
        and not isinstance(value, types.ModuleType)
        and not callable(value)
    }


def _coerce(name: str, value: Any, spec: Param) -> Any:
    if isinstance(value, str) and spec.kind in (list, (list,)):
        try:  # `-p ks "[512, 40]"` arrives as a string
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ParameterError(f"parameter {name!r}: could not read {value!r} as a list ({err})") from None
    if isinstance(value, int) and not isinstance(value, bool) and spec.kind is float:
        value = float(value)
    return value


def validate(namespace: Mapping[str, Any], schema: Mapping[str, Param]) -> Namespace:
    """Check the notebook's parameters against ``schema`` and return them.

    Args:
        namespace: the notebook's ``globals()`` right after the parameters cells.
        schema: parameter name -> :class:`Param`.

    Raises:
        ParameterError: naming the parameter, the value given and what is allowed; for an
            unknown name, the list of known ones.
    """
    given = _user_names(namespace)
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {unknown}; this chapter takes {sorted(schema)} "
            "(papermill only warns about unknown names, so vqtto refuses them)"
        )
    missing = sorted(set(schema) - set(given))
    if missing:
        raise ParameterError(f"parameter(s) {missing} are not defined in the parameters cell")
    out = {}
    for name, spec in schema.items():
        value = _coerce(name, given[name], spec)
        if value is None and spec.nullable:
            out[name] = None
            continue
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            allowed = " or ".join(k.__name__ for k in kinds) + (" or None" if spec.nullable else "")
            raise ParameterError(f"parameter {name!r} must be {allowed}, got {value!r} ({type(value).__name__})")
        if spec.check is not None:
            msg = spec.check(value)
            if msg is not None:
                raise ParameterError(f"parameter {name!r} must be {msg}, got {value!r}")
        out[name] = value
    return Namespace(**out)


def _literal(value: Any) -> str:
    """Python source for a default, strings in double quotes."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell(schema: Mapping[str, Param]) -> str:
    """The source of a notebook's parameters cell, generated from ``schema``.

    One line per parameter, ``name: type = default  # help``: papermill reads the annotation as
    the type and the comment as the help of ``--help-notebook``.
    """
    missing = [name for name, spec in schema.items() if spec.default is _NO_DEFAULT]
    if missing:
        raise ValueError(f"parameters {missing} have no default in the schema")
    heads = [f"{name}: {spec.type_annotation()} = {_literal(spec.default)}" for name, spec in schema.items()]
    width = max(len(h) for h in heads) + 2
    return "\n".join(f"{h:<{width}}# {spec.help}" for h, spec in zip(heads, schema.values()))


def defaults(schema: Mapping[str, Param]) -> dict[str, Any]:
    """``{name: default}`` of a schema."""
    return {name: spec.default for name, spec in schema.items()}

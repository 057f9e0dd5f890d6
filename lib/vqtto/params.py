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

    ``check`` (a :class:`Check`, or any callable of the value) returns None when the value is fine,
    or a phrase saying what is allowed; a :class:`Check` also gets the profile being run, and its
    bounds are appended to ``help``, so the cell states every range.
    """

    kind: type | tuple[type, ...]
    help: str
    check: Check | Callable[[Any], str | None] | None = None
    nullable: bool = False
    default: Any = _NO_DEFAULT

    def __post_init__(self) -> None:
        # What a Check allows ends the help, so the cell and `papermill --help-notebook` state every range.
        if isinstance(self.check, Check):
            bounds = f" [{self.check.describe()}]"
            if not self.help.endswith(bounds):
                object.__setattr__(self, "help", self.help + bounds)

    def type_annotation(self) -> str:
        """The annotation of the parameters cell (what ``papermill --help-notebook`` shows as the type)."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        name = kinds[0].__name__ if len(kinds) == 1 else "Union[" + ", ".join(k.__name__ for k in kinds) + "]"
        return f'"Optional[{name}]"' if self.nullable else name


# --- checks: each says what it allows and exposes its bounds -------------------------------------
#
# A check is called as ``check(value, profile)`` and returns None when the value is fine, or a phrase
# saying what is allowed. Its attributes (``lo``, ``hi``, ``limits``, ``allowed``, ``item``...) are
# its bounds, read by the test that feeds every parameter wrong values (tests/test_param_bounds.py).
# Every number a chapter takes has both bounds: shares and probabilities lie in [0, 1]; step sizes,
# temperatures and noise scales have an upper bound (shown in the help); counts and budgets, whose
# cost grows with their value, have a limit per profile (:class:`Work`).

#: Seconds of one chapter each profile can spend on a single count or budget (the rule of :class:`Work`):
#: smoke is for seconds-long runs (5 minutes is far past its purpose), quick for the 2 CPU cores of
#: ``make book`` (an hour for one chapter), full for one GPU (a day).
ALLOWANCE_S = {"smoke": 5 * 60, "quick": 60 * 60, "full": 24 * 3600}


class Check:
    """Base of the checks below; ``describe(profile)`` is the phrase shown in the help and in errors."""

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        raise NotImplementedError

    def describe(self, profile: str | None = None) -> str:
        raise NotImplementedError


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else f"{x:,}".replace(",", "_") if abs(x) >= 100_000 else str(x)


@dataclass(frozen=True)
class Range(Check):
    """Numbers in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    lo: float
    hi: float
    lo_open: bool = False

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        inside = (value > self.lo if self.lo_open else value >= self.lo) and value <= self.hi
        return None if inside else self.describe(profile)

    def describe(self, profile: str | None = None) -> str:
        return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}]"


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.3g} {unit}"
    return f"{seconds:.3g} s"


@dataclass(frozen=True)
class Work(Check):
    """A count or budget whose cost grows with its value: at least ``lo``, at most the profile's limit.

    The rule, written once: ``limits[profile]`` is the value at which this parameter alone would spend
    the profile's allowance (:data:`ALLOWANCE_S`: smoke 5 min, quick 1 h, full 24 h of one chapter), and a
    larger value is **refused**, before any work, with its estimated time (linear in the value:
    ``value / limit * allowance``) and the larger profiles' limits. Without a profile (a schema that has
    none) the largest limit applies.
    """

    lo: float
    limits: Mapping[str, float]
    lo_open: bool = False

    def hi(self, profile: str | None) -> float:
        return self.limits[profile] if profile in self.limits else max(self.limits.values())

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        if not (value > self.lo if self.lo_open else value >= self.lo):
            return self.describe(profile)
        hi = self.hi(profile)
        if value <= hi:
            return None
        where = f"the {profile} profile" if profile in ALLOWANCE_S else "any profile"
        allowance = ALLOWANCE_S.get(profile, max(ALLOWANCE_S.values()))
        others = ", ".join(f"{p} {_num(v)}" for p, v in self.limits.items() if v > hi)
        return (f"{self.describe(profile)}: {where} finishes at most {_num(hi)} within its allowance of "
                f"{_duration(allowance)}, and {_num(value)} would take about {_duration(value / hi * allowance)}"
                + (f" (limits of the larger profiles: {others})" if others else ""))

    def describe(self, profile: str | None = None) -> str:
        lo = f"{'(' if self.lo_open else '['}{_num(self.lo)}, "
        if profile in self.limits:
            return f"in {lo}{_num(self.limits[profile])}] under the {profile} profile"
        return "in " + lo + "limit]; limits: " + ", ".join(f"{p} {_num(v)}" for p, v in self.limits.items())


@dataclass(frozen=True)
class OneOf(Check):
    """Exactly one of ``allowed``."""

    allowed: tuple

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        return None if value in self.allowed else self.describe(profile)

    def describe(self, profile: str | None = None) -> str:
        return f"one of {list(self.allowed)}"


@dataclass(frozen=True)
class Device(Check):
    """A torch device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    allowed: tuple = ("auto", "cpu", "cuda")

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        ok = value in self.allowed or value.startswith("cuda:") and value[5:].isdigit()
        return None if ok else self.describe(profile)

    def describe(self, profile: str | None = None) -> str:
        return "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class PathName(Check):
    """A file-system path: a non-empty string of at most 4096 characters without NUL."""

    most: int = 4096

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        return None if 0 < len(value) <= self.most and "\0" not in value else self.describe(profile)

    def describe(self, profile: str | None = None) -> str:
        return f"a path (1 to {self.most} characters, no NUL)"


@dataclass(frozen=True)
class Grid(Check):
    """A latent grid ``[h, w]`` of positive ints with ``lo <= h * w <= hi`` positions."""

    lo: int
    hi: int

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in value))
        return None if ok and self.lo <= value[0] * value[1] <= self.hi else self.describe(profile)

    def describe(self, profile: str | None = None) -> str:
        return f"a grid [h, w] of positive ints with {self.lo} to {self.hi} positions"


@dataclass(frozen=True)
class NonEmpty(Check):
    """A non-empty list (an empty sweep would leave a section of the chapter silently empty), then ``inner``."""

    inner: Check

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        return "a non-empty list" if not value else self.inner(value, profile)

    def describe(self, profile: str | None = None) -> str:
        return "non-empty, " + self.inner.describe(profile)


@dataclass(frozen=True)
class Each(Check):
    """A list of at most ``most`` items (exactly ``length`` when given), each of ``kind`` passing ``item``."""

    item: Check
    kind: type
    most: int
    length: int | None = None

    def __call__(self, value: Any, profile: str | None = None) -> str | None:
        if self.length is not None and len(value) != self.length:
            return f"a list of exactly {self.length} items, each {self.item.describe(profile)}"
        if len(value) > self.most:
            return f"a list of at most {self.most} items"
        for v in value:
            if not isinstance(v, self.kind) or isinstance(v, bool) and self.kind is not bool:
                return f"a list of {self.kind.__name__}"
            msg = self.item(v, profile)
            if msg is not None:
                return f"a list whose items are each {msg}"
        return None

    def describe(self, profile: str | None = None) -> str:
        n = f"exactly {self.length}" if self.length is not None else f"at most {self.most}"
        return f"{n} {self.kind.__name__}s, each {self.item.describe(profile)}"


def between(lo: float, hi: float) -> Range:
    """Numbers in ``[lo, hi]``."""
    return Range(lo, hi)


def above(lo: float, hi: float) -> Range:
    """Numbers in ``(lo, hi]`` (a step size, temperature or weight that must be positive)."""
    return Range(lo, hi, lo_open=True)


def fraction() -> Range:
    """A share or probability: ``[0, 1]``."""
    return Range(0.0, 1.0)


#: Seeds: what numpy's and torch's generators both take.
SEED_MAX = 2**32 - 1


def seed() -> Range:
    """A random seed, ``[0, 2**32 - 1]``."""
    return Range(0, SEED_MAX)


def work(lo: float, *, smoke: float, quick: float, full: float, lo_open: bool = False) -> Work:
    """A count or budget: at least ``lo`` (more than, with ``lo_open``), at most each profile's limit (:class:`Work`)."""
    return Work(lo, {"smoke": smoke, "quick": quick, "full": full}, lo_open)


def one_of(*allowed: Any) -> OneOf:
    """A check accepting exactly the listed values."""
    return OneOf(tuple(allowed))


def grid(lo: int, hi: int) -> Grid:
    """A latent grid ``[h, w]`` with ``lo`` to ``hi`` positions."""
    return Grid(lo, hi)


def nonempty(check: Check) -> NonEmpty:
    """A non-empty list whose items pass ``check`` (an :func:`each`)."""
    return NonEmpty(check)


def each(check: Check, item_kind: type = int, *, most: int, length: int | None = None) -> Each:
    """A list of at most ``most`` items of ``item_kind`` (exactly ``length`` when given), each passing ``check``."""
    return Each(check, item_kind, most, length)


def _apply(check: Callable | None, value: Any, profile: str | None) -> str | None:
    if check is None:
        return None
    return check(value, profile) if isinstance(check, Check) else check(value)


def _profile_param() -> Param:
    from .models.profiles import PROFILES

    return Param(str, "model presets shared by all chapters: " + " | ".join(PROFILES), one_of(*PROFILES),
                 default="quick")


DEVICE = Param(str, "auto | cpu | cuda (auto: CUDA when present)", Device(), default="auto")


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

    A count or budget beyond what the profile being run can finish is refused with its estimated
    time (the rule of :class:`Work`).

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
    profile = None
    for name, spec in schema.items():
        value = _coerce(name, given[name], spec)
        if value is None and spec.nullable:
            out[name] = None
            continue
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            allowed = " or ".join(k.__name__ for k in kinds) + (" or None" if spec.nullable else "")
            raise ParameterError(f"parameter {name!r} must be {allowed}, got {value!r} ({type(value).__name__})")
        msg = _apply(spec.check, value, profile)
        if msg is not None:
            raise ParameterError(f"parameter {name!r} must be {msg}, got {value!r}")
        out[name] = value
        if name == "profile":  # the schema's first entry: the later checks' limits depend on it
            profile = value
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

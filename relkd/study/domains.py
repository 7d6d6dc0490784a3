"""Domains of search dimensions (a fixed value, a set of choices, a range) and how a study file's
value becomes one, with every error named by its field path."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..fields import FieldChecker, join_path
from ..registry import did_you_mean

__all__ = ["Fixed", "Choice", "Range", "Domain", "same", "numeric_domain", "name_domain", "bool_domain",
           "free_names", "upper", "names_of"]


@dataclass(frozen=True)
class Fixed:
    """One value: nothing is searched and no Optuna parameter is created."""

    value: Any

    def suggest(self, trial: Any, name: str) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return same(value, self.value)

    @property
    def searched(self) -> bool:
        return False

    def describe(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return any(same(value, c) for c in self.choices)

    @property
    def searched(self) -> bool:
        return True

    def describe(self) -> Any:
        return list(self.choices)


@dataclass(frozen=True)
class Range:
    """A float or integer range, optionally log-uniform."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        tolerance = 1e-9 * max(abs(self.low), abs(self.high), 1.0)
        return self.low - tolerance <= value <= self.high + tolerance

    @property
    def searched(self) -> bool:
        return self.low != self.high

    def describe(self) -> Any:
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        return out


Domain = Fixed | Choice | Range


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def numeric_domain(c: FieldChecker, value: Any, path: str, *, integer: bool = False, minimum: float = 0.0,
                    strict: bool = False, log_default: bool = False, maximum: float | None = None) -> Domain | None:
    """A number (fixed), a list of numbers (choices) or ``{low, high, log}`` (range)."""
    check = (lambda v, p: c.integer(v, p, minimum=int(minimum))) if integer else \
        (lambda v, p: c.number(v, p, minimum=minimum, strict=strict, maximum=maximum))
    if isinstance(value, Mapping):
        if not c.mapping(value, path, ("low", "high", "log")):
            return None
        for key in ("low", "high"):
            if key not in value:
                c.error(join_path(path, key), "missing; a range needs low and high")
        if "low" not in value or "high" not in value:
            return None
        low, high = check(value["low"], join_path(path, "low")), check(value["high"], join_path(path, "high"))
        log = c.boolean(value.get("log", log_default), join_path(path, "log"))
        if low is None or high is None or log is None:
            return None
        if low > high:
            c.error(path, f"low ({low:g}) must not exceed high ({high:g})")
            return None
        if log and low <= 0:
            c.error(join_path(path, "low"), f"a log range needs low > 0 (expected a positive low), got {low:g}")
            return None
        return Fixed(low) if low == high else Range(low, high, log, integer)
    if isinstance(value, (list, tuple)):
        if not value:
            c.error(path, "expected at least one value")
            return None
        values = [check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if any(v is None for v in values):
            return None
        unique = tuple(dict.fromkeys(values))
        return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)
    number = check(value, path)
    return None if number is None else Fixed(number)


def name_domain(c: FieldChecker, value: Any, path: str, allowed: Sequence[str], kind: str) -> Domain | None:
    """``all``, one name or a list of names out of ``allowed``."""
    if value == "all":
        if not allowed:
            c.error(path, f"no {kind} to choose from; expected a list of {kind} names")
            return None
        return Choice(tuple(allowed)) if len(allowed) > 1 else Fixed(allowed[0])
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        c.error(path, f"expected 'all', a {kind} name or a list of them; allowed: {', '.join(allowed)}; "
                      f"got {value!r}")
        return None
    ok = True
    for i, name in enumerate(names):
        if name not in allowed:
            where = path if isinstance(value, str) else f"{path}[{i}]"
            c.error(where, f"unknown {kind} {name!r}{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}")
            ok = False
    if not ok:
        return None
    unique = tuple(dict.fromkeys(names))
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def bool_domain(c: FieldChecker, value: Any, path: str) -> Domain | None:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, bool) for v in values):
        c.error(path, f"expected true, false or [false, true], got {value!r}")
        return None
    unique = tuple(dict.fromkeys(values))
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def free_names(c: FieldChecker, value: Any, path: str) -> Domain | None:
    """Tap names when the models are not known yet: any non-empty names."""
    names = [value] if isinstance(value, str) else value
    if value == "all" or not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) and n for n in names):
        c.error(path, f"expected a tap name or a list of them (e.g. [last_stage, pool]), got {value!r}")
        return None
    unique = tuple(dict.fromkeys(names))
    return Fixed(unique[0]) if len(unique) == 1 else Choice(unique)


def upper(domain: Domain) -> int:
    if isinstance(domain, Fixed):
        return int(domain.value)
    if isinstance(domain, Choice):
        return int(max(domain.choices))
    return int(domain.high)


def names_of(domain: Domain) -> tuple[Any, ...]:
    """The values a categorical or fixed domain allows."""
    return domain.choices if isinstance(domain, Choice) else (domain.value,)


"""Parsing of 'name:key=value,key=value' specs, shared by solvers and models."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass


class SpecError(ValueError):
    """Bad user input in a solver/model spec; the message is one line naming the problem and what is accepted."""


@dataclass(frozen=True)
class Range:
    """The accepted values of a numeric option or spec value: bounds lo/hi (None: unbounded), each closed
    unless lo_open/hi_open. NaN is never accepted and +-inf only with allow_inf. `note` replaces the generic
    'need lo <= name <= hi' of the error message with the owner's own wording.

    Options declare theirs next to `defaults` (`ranges = {"eta": (0, 1)}`: a 2-tuple is a closed range); every
    numeric option without one still has to be a finite number."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    allow_inf: bool = False
    note: str = ""

    def contains(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if math.isnan(v) or (math.isinf(v) and not self.allow_inf):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def describe(self, name: str) -> str:
        """'0 < beta <= 1', 'window >= 0', or 'a finite number'."""
        lo = None if self.lo is None else f"{_num(self.lo)} {'<' if self.lo_open else '<='} "
        hi = None if self.hi is None else f" {'<' if self.hi_open else '<='} {_num(self.hi)}"
        if lo and hi:
            return f"{lo}{name}{hi}"
        if lo:
            return f"{name} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if hi:
            return f"{name}{hi}"
        return "a finite number" if not self.allow_inf else "a number (inf allowed)"


def as_range(r) -> Range:
    """A declared range: a Range, or a 2-tuple (lo, hi) for the closed range lo <= x <= hi."""
    if isinstance(r, Range):
        return r
    lo, hi = r
    return Range(lo, hi)


def _num(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else f"{x:g}"


FINITE = Range()   # what a numeric option without a declared range accepts


def parse_spec(spec: str, what: str = "solver") -> tuple[str, dict[str, str]]:
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"malformed {what} spec '{spec}': expected NAME or NAME:key=value,key=value")
    opts: dict[str, str] = {}
    if _:
        if not rest.strip():
            raise SpecError(f"malformed {what} spec '{spec}': nothing after ':' (expected key=value,...)")
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise SpecError(f"malformed option '{item}' in {what} spec '{spec}': expected key=value")
            if key.strip() in opts:
                raise SpecError(f"option '{key.strip()}' given twice in {what} spec '{spec}': give each option once")
            opts[key.strip()] = value.strip()
    return name, opts


def closest(name: str, choices, n: int = 3) -> str:
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
    return ", ".join(close) if close else ", ".join(sorted(choices))


def coerce_options(owner: str, raw: dict[str, object], defaults: dict[str, object],
                   choices: dict[str, tuple] | None = None, ranges: dict | None = None) -> dict[str, object]:
    """Convert string option values to the type of each default; reject unknown keys and bad values: a value
    outside `choices`, or a numeric one outside its declared range in `ranges` (finite, at least)."""
    out = dict(defaults)
    for key, value in raw.items():
        if key not in defaults:
            accepted = ", ".join(sorted(defaults)) or "none"
            raise SpecError(f"unknown option '{key}' for {owner}; accepted options: {accepted}")
        out[key] = _coerce(owner, key, value, defaults[key])
        if choices and key in choices and out[key] not in choices[key]:
            raise SpecError(f"option {key}={value} for {owner} not accepted; choose one of: "
                            + ", ".join(map(str, choices[key])))
        check_option_range(owner, key, out[key], defaults[key], (ranges or {}).get(key))
    return out


def is_numeric_option(default) -> bool:
    """Options whose default is a number (or None: an optional float) take numbers."""
    return default is None or (isinstance(default, (int, float)) and not isinstance(default, bool))


def check_option_range(owner: str, key: str, value, default, declared=None):
    """Reject a numeric option's value outside its declared range (without one: any finite number)."""
    if not is_numeric_option(default) or (default is None and value is None):
        return
    rng = FINITE if declared is None else as_range(declared)
    if not rng.contains(value):
        need = rng.note or "need " + rng.describe(key)
        raise SpecError(f"option {key}={value} for {owner} not accepted: {need}")


def _coerce(owner, key, value, default):
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            low = value.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or default is None:
            return float(value)
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__ if default is not None else "a number"
        raise SpecError(f"option {key}={value} for {owner} is not valid: expected {kind}") from None
    return value

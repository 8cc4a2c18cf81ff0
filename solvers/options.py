"""Parsing of 'name:key=value,key=value' specs, shared by solvers and models."""
from __future__ import annotations

import difflib


class SpecError(ValueError):
    """Bad user input in a solver/model spec; the message is one line naming the problem and what is accepted."""


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
            opts[key.strip()] = value.strip()
    return name, opts


def closest(name: str, choices, n: int = 3) -> str:
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
    return ", ".join(close) if close else ", ".join(sorted(choices))


def coerce_options(owner: str, raw: dict[str, object], defaults: dict[str, object],
                   choices: dict[str, tuple] | None = None) -> dict[str, object]:
    """Convert string option values to the type of each default; reject unknown keys and bad values."""
    out = dict(defaults)
    for key, value in raw.items():
        if key not in defaults:
            accepted = ", ".join(sorted(defaults)) or "none"
            raise SpecError(f"unknown option '{key}' for {owner}; accepted options: {accepted}")
        out[key] = _coerce(owner, key, value, defaults[key])
        if choices and key in choices and out[key] not in choices[key]:
            raise SpecError(f"option {key}={value} for {owner} not accepted; choose one of: "
                            + ", ".join(map(str, choices[key])))
    return out


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

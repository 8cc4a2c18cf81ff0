"""Solvers from outside the package: entry points of group `nfebench.solvers` and plugin files."""
from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

_loaded = False


def load_entry_points():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group="nfebench.solvers"):
        ep.load()  # importing the module runs its @register_solver decorators


def load_plugin_file(path: str):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"plugin file not found: {path}")
    name = f"nfebench_plugin_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

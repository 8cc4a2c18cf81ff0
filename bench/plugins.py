"""Solver plugin files (`--plugin my.py`, `plugins = [...]`): imported once each, a bad one stopped with one line.

Installed packages register solvers through entry points of group `nfebench.solvers`, imported once per process
by `load_installed_plugins` (the CLI and the runner call it; solvers/ itself loads nothing)."""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from solvers.options import SpecError
from solvers.registry import _REGISTRY

_files: dict[str, object] = {}   # resolved plugin path -> its module: a file is loaded once per process
_installed_loaded = False


def load_installed_plugins():
    """Import the installed packages' solvers (entry points of group nfebench.solvers), once per process."""
    global _installed_loaded
    if not _installed_loaded:
        _installed_loaded = True
        for ep in entry_points(group="nfebench.solvers"):
            ep.load()  # importing the module runs its @register_solver decorators


def load_plugin_file(path: str):
    """Import a plugin file once (the same file again, by any path, is a no-op returning the same module).
    Bad plugins stop with one SpecError line naming the file: a missing file, one that is not Python, one that
    raises, or one registering a solver name that is taken (a built-in's or another plugin's)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"plugin file not found: {path}")
    key = str(p.resolve())
    if key in _files:
        return _files[key]
    name = f"nfebench_plugin_{p.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise SpecError(f"plugin file {path} is not a Python file; accepted: a .py file registering solvers")
    module = importlib.util.module_from_spec(spec)
    before = dict(_REGISTRY)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        _REGISTRY.clear()                       # a failed plugin registers nothing
        _REGISTRY.update(before)
        if not isinstance(e, Exception):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if isinstance(e, SpecError) and "already registered" in msg:
            raise SpecError(f"plugin file {path}: {msg}") from None
        raise SpecError(f"plugin file {path} failed to load: {type(e).__name__}"
                        + (f": {msg}" if msg else "")) from None
    _files[key] = module
    return module

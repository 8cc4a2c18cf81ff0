"""Moving a bad file aside: RUN/quarantine/<time>/<its path in the run>, its reason in RUN/quarantine/reasons.log,
one warning line naming it. Nothing is deleted; what the file held is computed again by its reader."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

QUARANTINE = "quarantine"


def report(msg: str):
    """One line on stderr (also under --quiet: a file was moved)."""
    print(f"nfebench: warning: {msg}", file=sys.stderr)


def run_root(path: Path, levels: int = 4) -> Path | None:
    """The run directory whose cache/ holds `path` (RUN/cache/ref-*.pt, RUN/cache/fidelity/<x>/*.pt: at most
    `levels` up, with cells/ beside cache/); None for a cache outside any run."""
    for d in list(Path(path).resolve().parents)[:levels]:
        if d.name == "cache" and (d.parent / "cells").is_dir():
            return d.parent
    return None


def quarantine(path, reason: str, root=None) -> Path | None:
    """Move a bad file to <run>/quarantine/<time>/<its relative path> and log why (one line, stderr and
    reasons.log). Returns where it went; None when it was already gone (another process moved it)."""
    path = Path(path)
    root = Path(root) if root is not None else run_root(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if root is not None:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            rel = Path(path.name)
        base = root / QUARANTINE
    else:  # a cache outside any run directory (e.g. ~/.cache/nfebench): beside the file
        rel, base = Path(path.name), path.parent / QUARANTINE
    dest = base / stamp / rel
    n = 1
    while dest.exists():
        dest = base / stamp / rel.with_name(f"{rel.name}.{n}")
        n += 1
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    except OSError as e:   # a read-only run directory: the file stays, and is still not used
        report(f"bad file {path} (could not move it aside: {e.strerror or type(e).__name__}): {reason}")
        return None
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {rel} -> {dest.relative_to(base)}: {reason}\n"
    try:
        fd = os.open(base / "reasons.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass
    report(f"bad file {path} moved to {dest}: {reason}")
    return dest

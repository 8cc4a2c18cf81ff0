"""The run directory: run.json, one JSON file per finished cell (atomic), results.csv."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

COLUMNS = ["model", "solver", "nfe", "nfe_used", "guidance", "seed", "n_samples", "fid", "kid", "traj_rmse",
           "cond_acc", "diverged_frac", "wall_s", "samples_per_s"]


def atomic_write(path: Path, text: str):
    """Write via a temp file in the same directory and rename, so readers never see a partial file."""
    with temp_beside(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what a plain open() creates; mkstemp's 0600 would hide results from others


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.pid{os.getpid()}."


def _is_stale(tmp: Path) -> bool:
    """A temp file left by a writer that is gone: its process no longer exists (or, for names without a pid,
    it is over a minute old); a live process's write in flight is never touched."""
    m = re.search(r"\.pid(\d+)\.[^.]*\.tmp$", tmp.name)
    if m is None:
        return time.time() - tmp.stat().st_mtime > 60
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@contextmanager
def temp_beside(path: Path):
    """A temp file name unique to this writer, beside `path`, renamed onto it when the block ends: processes
    sharing a run directory may finish the same cell at once and must not collide on one temp name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cell_key(model: str, solver: str, nfe: int, guidance: float, seed: int, n_samples: int) -> str:
    raw = f"{model}|{solver}|{nfe}|{guidance:g}|{seed}|{n_samples}"
    slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", f"{model}__{solver}__nfe{nfe}__g{guidance:g}__s{seed}")
    return f"{slug[:120]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self._rows: dict[str, dict] | None = None  # key -> row; read from cells/ once, then kept in step

    def ensure(self):
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.cells_dir, self.root / "samples", self.root / "features", self.root / "cache", self.root):
            for tmp in d.glob(".*.tmp") if d.is_dir() else []:   # left by a run killed mid-write
                if _is_stale(tmp):
                    tmp.unlink(missing_ok=True)

    def cell_path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.cell_path(key).is_file()

    def write_cell(self, key: str, row: dict):
        text = json.dumps(_jsonable(row), indent=1, sort_keys=True)
        atomic_write(self.cell_path(key), text)
        if self._rows is not None:
            self._rows[key] = json.loads(text)  # as a reread would see it

    def write_samples(self, key: str, samples: dict):
        path = self.root / "samples" / f"{key}.pt"
        with temp_beside(path) as tmp:
            torch.save(samples, tmp)

    def read_samples(self, key: str) -> dict | None:
        path = self.root / "samples" / f"{key}.pt"
        return torch.load(path) if path.is_file() else None

    def read_cells(self) -> list[dict]:
        # one read of cells/ per store: rewriting results.csv after every cell must not reread them all
        if self._rows is None:
            self._rows = {p.stem: json.loads(p.read_text()) for p in sorted(self.cells_dir.glob("*.json"))}
        return [self._rows[k] for k in sorted(self._rows)]

    def forget_rows(self):
        self._rows = None

    def write_meta(self, meta: dict, name: str = "run.json"):
        atomic_write(self.root / name, json.dumps(_jsonable(meta), indent=1, sort_keys=True))

    def read_meta(self) -> dict:
        p = self.root / "run.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def results(self) -> pd.DataFrame:
        return results_frame(self.read_cells())

    def write_results(self) -> pd.DataFrame:
        df = self.results()
        atomic_write(self.root / "results.csv", df.to_csv(index=False))
        return df


def results_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    extra = [c for c in df.columns if c not in COLUMNS and c not in ("key",)]
    df = df[COLUMNS + sorted(extra)]
    for c in COLUMNS[2:]:
        df[c] = pd.to_numeric(df[c].replace({"inf": math.inf, "-inf": -math.inf}), errors="coerce")
    if len(df):
        df = df.sort_values(["model", "guidance", "solver", "nfe", "seed"], kind="stable").reset_index(drop=True)
    return df


def load_results(run_dir: str | Path) -> pd.DataFrame:
    store = RunStore(run_dir)
    if store.cells_dir.is_dir():
        return store.results()
    csv = Path(run_dir) / "results.csv"
    if csv.is_file():
        return pd.read_csv(csv)
    raise FileNotFoundError(f"no run found at {run_dir} (expected cells/ or results.csv)")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj

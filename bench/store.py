"""The run directory: run.json, one JSON file per finished cell (atomic), results.csv."""
from __future__ import annotations

import fcntl
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

from solvers.options import SpecError

from . import runfiles

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


def _slug(model: str, solver: str, nfe: int, guidance: float, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", f"{model}__{solver}__nfe{nfe}__g{guidance:g}__s{seed}")[:120]


def cell_key(model: str, solver: str, nfe: int, guidance: float, seed: int, n_samples: int) -> str:
    """The file name of a cell written before cells had an identity (read back for old run directories only)."""
    raw = f"{model}|{solver}|{nfe}|{guidance:g}|{seed}|{n_samples}"
    return f"{_slug(model, solver, nfe, guidance, seed)}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def identity_key(model: str, solver: str, nfe: int, guidance: float, seed: int, cell_id: str) -> str:
    """A cell's file name: readable coordinates, then the hash of its identity (bench/identity.py)."""
    return f"{_slug(model, solver, nfe, guidance, seed)}-{cell_id}"


def row_key(row) -> str:
    """The file name of a results row's cell (rows of old run directories have no cell_id)."""
    cid = row.get("cell_id") if hasattr(row, "get") else None
    if isinstance(cid, str) and cid:
        return identity_key(row["model"], row["solver"], int(row["nfe"]), float(row["guidance"]), int(row["seed"]),
                            cid)
    return cell_key(row["model"], row["solver"], int(row["nfe"]), float(row["guidance"]), int(row["seed"]),
                    int(row["n_samples"]))


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self._rows: dict[str, dict] | None = None  # key -> row; read from cells/ once, then kept in step

    def ensure(self):
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        shards = [d for d in (self.root / "shards").iterdir() if d.is_dir()] if (self.root / "shards").is_dir() else []
        for d in (self.cells_dir, self.root / "samples", self.root / "features", self.root / "cache", self.root,
                  *shards):
            for tmp in d.glob(".*.tmp") if d.is_dir() else []:   # left by a run killed mid-write
                if _is_stale(tmp):
                    tmp.unlink(missing_ok=True)

    def cell_path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def has(self, key: str) -> bool:
        return runfiles.read_cell(self.cell_path(key), self.root) is not None  # a bad file is moved aside

    def write_cell(self, key: str, row: dict):
        text = json.dumps(_jsonable(row), indent=1, sort_keys=True)
        atomic_write(self.cell_path(key), text)
        if self._rows is not None:
            self._rows[key] = json.loads(text)  # as a reread would see it

    def write_samples(self, key: str, samples: dict):
        path = self.root / "samples" / f"{key}.pt"
        with temp_beside(path) as tmp:
            torch.save(samples, tmp)

    @contextmanager
    def claim(self, key: str, wait: bool = False):
        """Yield True while this process holds the cell's lock (an flock on locks/<key>.lock), False when another
        process holds it and `wait` is off. The kernel drops the lock when its holder dies, even by SIGKILL."""
        path = self.root / "locks" / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def log_event(self, text: str):
        """Append one line to events.log (which process computed which cell, when)."""
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {text}\n"
        fd = os.open(self.root / "events.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def move_aside(self, keys, folder: str) -> Path:
        """Move the files of these cells (cell JSON, samples, features) under RUN/<folder>/<time>/: kept, never
        deleted, and out of every table."""
        dest = self.root / folder / time.strftime("%Y%m%d-%H%M%S")
        for key in keys:
            for sub, ext in (("cells", ".json"), ("samples", ".pt"), ("features", ".npz")):
                src = self.root / sub / f"{key}{ext}"
                if src.is_file():
                    (dest / sub).mkdir(parents=True, exist_ok=True)
                    os.replace(src, dest / sub / src.name)
            if self._rows is not None:
                self._rows.pop(key, None)
        return dest

    # ---- shards of cells in progress: RUN/shards/<cell key>/<start>-<stop>.npz, written by the driver alone ----

    def shard_path(self, key: str, start: int, stop: int) -> Path:
        return self.root / "shards" / key / f"{start}-{stop}.npz"

    def write_shard(self, key: str, result):
        """Save a shard's result (plain arrays, atomic): a rerun of the cell loads it instead of computing it."""
        import numpy as np
        path = self.shard_path(key, result.start, result.stop)
        with temp_beside(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **result.to_arrays())

    def read_shards(self, key: str, ranges) -> dict:
        """{start: ShardResult} of this cell's saved shards among `ranges` (a bad file is moved aside and its
        shard computed again)."""
        from .quarantine import quarantine
        from .runfiles import load_npz
        from .sharding import ShardResult
        out = {}
        for start, stop in ranges:
            path = self.shard_path(key, start, stop)
            if not path.is_file():
                continue
            try:
                out[start] = ShardResult.from_arrays(load_npz(path, None), start, stop)
            except FileNotFoundError:
                continue
            except ValueError as e:
                quarantine(path, f"saved shard: {e}; computed again", self.root)
        return out

    def drop_shards(self, key: str):
        """Remove a finished cell's shard files (its cell file is written first)."""
        d = self.root / "shards" / key
        if d.is_dir():
            for f in d.iterdir():
                f.unlink(missing_ok=True)
            try:
                d.rmdir()
            except OSError:
                pass

    def write_all_samples(self, key: str, x, y):
        """Every sample of a cell (save_samples), RUN/samples/<key>.npz: x, and y when conditional."""
        import numpy as np
        path = self.root / "samples" / f"{key}.npz"
        arrays = {"x": x} if y is None else {"x": x, "y": np.asarray(y)}
        with temp_beside(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def read_samples(self, key: str) -> dict | None:
        path = self.root / "samples" / f"{key}.pt"
        return runfiles.read_samples(path, self.root)  # weights-only load, checked; None when missing or bad

    def read_cells(self) -> list[dict]:
        # one read of cells/ per store: rewriting results.csv after every cell must not reread them all
        if self._rows is None:
            rows = {p.stem: runfiles.read_cell(p, self.root) for p in sorted(self.cells_dir.glob("*.json"))}
            self._rows = {k: r for k, r in rows.items() if r is not None}  # bad files: moved aside, rerun
        return [self._rows[k] for k in sorted(self._rows)]

    def read_cells_by_key(self) -> dict[str, dict]:
        self.read_cells()
        return dict(self._rows)

    def forget_rows(self):
        self._rows = None

    def write_meta(self, meta: dict, name: str = "run.json"):
        atomic_write(self.root / name, json.dumps(_jsonable(meta), indent=1, sort_keys=True))

    def read_meta(self) -> dict:
        p = self.root / "run.json"
        return runfiles.read_json_object(p, "run.json", self.root) or {}

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
    extra = [c for c in df.columns if c not in COLUMNS and c not in ("key", "identity")]
    df = df[COLUMNS + sorted(extra)]
    for c in COLUMNS[2:]:
        df[c] = pd.to_numeric(df[c].replace({"inf": math.inf, "-inf": -math.inf}), errors="coerce")
    if len(df):
        df = df.sort_values(["model", "guidance", "solver", "nfe", "seed"], kind="stable").reset_index(drop=True)
        check_one_row_per_seed(df)
    return df


CELL_COORDS = ["model", "guidance", "solver", "nfe", "seed"]


def check_one_row_per_seed(df: pd.DataFrame):
    """Two rows of one (model, guidance, solver, NFE, seed) are two setups, never two seeds: refuse to table them."""
    dup = df[df.duplicated(CELL_COORDS, keep=False)]
    if len(dup):
        r = dup.iloc[0]
        n = dup[(dup[CELL_COORDS] == r[CELL_COORDS]).all(axis=1)]
        raise SpecError(f"results hold {len(n)} rows for {r.model} {r.solver} NFE {r.nfe} guidance {r.guidance:g} "
                        f"seed {r.seed} (n_samples {', '.join(map(str, n.n_samples))}): two setups in one run; "
                        "table each run directory on its own")


def load_results(run_dir: str | Path) -> pd.DataFrame:
    store = RunStore(run_dir)
    if store.cells_dir.is_dir():
        return store.results()
    csv = Path(run_dir) / "results.csv"
    if csv.is_file():
        try:
            df = pd.read_csv(csv)
        except (ValueError, UnicodeDecodeError) as e:  # pandas' parser errors are ValueErrors
            raise SpecError(f"results file {csv} is unreadable ({type(e).__name__}); it has no cells/ to rebuild "
                            "it from") from None
        check_one_row_per_seed(df)
        return df
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

"""Benchmark specs: a TOML file and/or CLI flags describing a grid of cells.

A cell is (model, solver spec, NFE, guidance, seed). Flags override the file; lists are comma-separated.
"""
from __future__ import annotations

import os
import re
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from solvers import noise
from solvers.options import Range, SpecError

from .metric_families import CHOOSABLE as METRICS  # the registered metrics (bench/metric.py), read live
MAX_SEED = noise.MAX_SEED   # seeds 0..MAX_SEED: the range where no two noise streams coincide (solvers/noise.py)
MAX_NFE = 100_000
MAX_SAMPLES = 10_000_000
MAX_KID_SUBSETS = 10_000
DEFAULT_BATCH_SIZE = 1024   # the network's best speed on CPU (digits, bench figures); one noise block
MAX_WORKERS = 1024

# Every number of a spec, whether it comes from a flag or a spec file, passes here: (declared range, what the
# error line says is accepted). Booleans are never numbers; NaN and inf never pass.
NUMBERS = {
    "samples": (Range(1, MAX_SAMPLES), f"samples must be a positive integer, at most {MAX_SAMPLES}"),
    "batch_size": (Range(0, MAX_SAMPLES), f"batch_size must be >= 0 (0 = one batch), at most {MAX_SAMPLES}"),
    "kid_subsets": (Range(1, MAX_KID_SUBSETS), f"kid_subsets must be a positive integer, at most {MAX_KID_SUBSETS}"),
    "reference_samples": (Range(0, MAX_SAMPLES),
                          f"reference_samples must be >= 0 (0 = all samples), at most {MAX_SAMPLES}"),
    "reference_rtol": (Range(0, 1, lo_open=True, hi_open=True),
                       "reference_rtol must be a finite number with 0 < reference_rtol < 1 (default 1e-6)"),
    "nfe": (Range(1, MAX_NFE), f"NFE values must be positive integers, at most {MAX_NFE}"),
    "seeds": (Range(0, MAX_SEED), f"seeds must be integers from 0 to {MAX_SEED}"),
    "guidance": (Range(0, lo_open=True), "guidance values must be finite and positive (1 = no guidance)"),
    "memory_limit_gb": (Range(0), "memory_limit_gb must be a finite number >= 0 (0 = no check)"),
    "workers": (Range(0, MAX_WORKERS), f"workers must be an integer from 0 to {MAX_WORKERS} (0 = one per device)"),
    "shard_samples": (Range(0, MAX_SAMPLES), f"shard_samples must be >= 0 (0 = 8 batches), at most {MAX_SAMPLES}"),
    "slurm_gpus_per_task": (Range(0, 64), "slurm_gpus_per_task must be an integer from 0 to 64"),
    "slurm_time_min": (Range(1, 60 * 24 * 30), "slurm_time_min must be an integer from 1 to 43200 (minutes)"),
    "slurm_array_parallelism": (Range(0, 100_000), "slurm_array_parallelism must be an integer >= 0 (0 = no limit)"),
}
INTEGERS = ("samples", "batch_size", "kid_subsets", "reference_samples", "nfe", "seeds", "workers", "shard_samples",
            "slurm_gpus_per_task", "slurm_time_min", "slurm_array_parallelism")
EXECUTORS = ("local", "pool", "submitit", "ray")
MODEL_DTYPES = ("float32", "float64", "bfloat16", "float16")
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")


@dataclass
class RunConfig:
    models: list[str] = field(default_factory=lambda: ["gmm2d"])
    solvers: list[str] = field(default_factory=lambda: ["ddim", "dpmpp-2m"])
    nfe: list[int] = field(default_factory=lambda: [5, 10, 20])
    guidance: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    samples: int = 2000
    batch_size: int = DEFAULT_BATCH_SIZE   # samples per network batch (0: a cell in one batch)
    metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "traj_rmse"])
    device: str = "cpu"
    dtype: str = "float32"
    out: str = ""                       # run directory; default runs/<name>
    name: str = "run"
    below_min_nfe: str = "error"        # 'error' or 'skip' cells whose NFE is below a solver's min_nfe
    reference_rtol: float = 1e-6        # dopri5 tolerances of the reference solve behind traj_rmse
    reference_samples: int = 0          # traj_rmse over the first N samples of a cell (0: all of them)
    kid_subsets: int = 100              # KID: mean over this many random subsets (torch-fidelity's default 100)
    plugins: list[str] = field(default_factory=list)
    inception_weights: str = ""         # local InceptionV3 weights for image models (no network)
    fid_stats: str = ""                 # user-given reference statistics for image models
    ratios: list[str] = field(default_factory=list)  # 'MOD/BASE' solver pairs: paired ratio table ratios.md
    fid_changes: bool = False           # fid_changes.md: paired-bootstrap intervals of FID between NFEs
    calibration: str = ""               # DC-Solver ratios file, read and extended (default RUN/calibration.json)
    memory_limit_gb: float = field(default_factory=lambda: _default_memory_limit_gb())  # cells over it: refused
    model_dtype: str = ""               # the network's dtype (float32, float64, bfloat16, float16; "": dtype's)
    save_samples: bool = False          # write every sample of a cell to RUN/samples/<cell>.npz
    # where shards run (bench/executors.py): none of these changes a number
    executor: str = "local"             # local, pool (--workers N), submitit, ray
    workers: int = 0                    # processes (pool) or tasks in flight (submitit, ray); 0: one per device/CPU
    devices: list[str] = field(default_factory=list)   # one pool worker per device (cuda:0,cuda:1,...)
    shard_samples: int = 0              # samples per shard, a multiple of the batch size (0: 8 batches)
    slurm_partition: str = ""
    slurm_gpus_per_task: int = 0
    slurm_time_min: int = 60
    slurm_array_parallelism: int = 0    # 0: no limit
    ray_address: str = ""               # "": a local Ray instance

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        p = Path(path)
        if p.is_dir():
            raise SpecError(f"spec file {path} is a directory; accepted: a TOML file or a shipped suite name")
        if not p.is_file():
            raise SpecError(f"spec file not found: {path}")
        try:
            data = tomllib.loads(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise SpecError(f"spec file {path} is not UTF-8 text (byte {e.start}: {e.reason}); "
                            "accepted: a UTF-8 TOML file") from None
        except OSError as e:
            raise SpecError(f"spec file {path} cannot be read: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"spec file {path} is not valid TOML: {e}") from None
        run = data.pop("run", {})
        if not isinstance(run, dict):
            raise SpecError(f"'run' in spec file {path} must be a table ([run] holding the spec's keys), "
                            f"got {type(run).__name__} {_short(run)}")
        data = {**run, **data}  # a [run] table or top-level keys
        spec = cls()
        spec.update(data, source=str(path))
        if not spec.out:
            spec.out = str(Path("runs") / spec.name)
        return spec

    def update(self, values: dict, source: str = "flags"):
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            if value is None:
                continue
            if key not in known:
                raise SpecError(f"unknown key '{key}' in {source}; accepted: {', '.join(known)}")
            setattr(self, key, _convert(key, value, getattr(self, key), source))
        self.validate()

    def validate(self):
        for key, (rng, accepted) in NUMBERS.items():
            value = getattr(self, key)
            for v in value if isinstance(value, list) else [value]:
                if not rng.contains(v) or (key in INTEGERS and not isinstance(v, int)):
                    raise SpecError(f"{accepted}, got {_short(v)}")
        if not SAFE_NAME.fullmatch(self.name):
            raise SpecError(f"name {_short(self.name)} is not a single safe path component (it names the run "
                            "directory runs/<name>); accepted: letters, digits and . _ - + (not first: . -)")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise SpecError(f"unknown metric '{bad[0]}'; accepted: {', '.join(METRICS)}")
        _check_device(self.device)
        if self.dtype not in ("float32", "float64"):
            raise SpecError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.model_dtype and self.model_dtype not in MODEL_DTYPES:
            raise SpecError(f"model_dtype must be one of {', '.join(MODEL_DTYPES)} (or empty: dtype's), "
                            f"got {_short(self.model_dtype)}")
        if self.executor not in EXECUTORS:
            raise SpecError(f"unknown executor {_short(self.executor)}; accepted: {', '.join(EXECUTORS)}")
        for d in self.devices:
            _check_device(d)
        if self.shard_samples and 0 < self.batch_size < self.samples and self.shard_samples % self.batch_size:
            raise SpecError(f"shard_samples ({self.shard_samples}) must be a multiple of batch_size "
                            f"({self.batch_size}): a sample is computed in the same batch however a cell is sharded")
        if self.below_min_nfe not in ("error", "skip"):
            raise SpecError(f"below_min_nfe must be 'error' or 'skip', got {self.below_min_nfe}")
        from .ratios import parse_pair
        for pair in self.ratios:
            parse_pair(pair)
        for what in ("models", "solvers", "nfe", "seeds", "guidance"):
            if not getattr(self, what):
                raise SpecError(f"the spec lists no {what}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def dtype_tag(self) -> str:
        """The state's dtype, and the network's after '+' when they differ (cache and calibration keys)."""
        mixed = self.model_dtype and self.model_dtype != self.dtype
        return f"{self.dtype}+{self.model_dtype}" if mixed else self.dtype


def _default_memory_limit_gb() -> float:
    from .memory import default_memory_limit_gb
    return default_memory_limit_gb()


def _check_device(name: str):
    """A torch device this machine has: cpu, cuda or cuda:<index>."""
    import torch
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpecError(f"unknown device '{name}'; accepted: cpu, cuda, cuda:<index>") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise SpecError(f"device '{name}' is not supported; accepted: cpu, cuda, cuda:<index>")
    if not torch.cuda.is_available():
        raise SpecError(f"device '{name}' asked for but this torch sees no CUDA device; accepted here: cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SpecError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def split_specs(text: str) -> list[str]:
    """Split 'ddim,dpmpp-2m:a=1,b=2,heun' into specs: a piece with '=' but no ':' is an option of the previous."""
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece and out:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def _convert(key, value, current, source):
    try:
        if isinstance(value, bool) and not isinstance(current, bool):
            raise ValueError            # TOML true/false is no number (nor text) here
        if isinstance(current, list):
            if isinstance(value, str):
                items = split_specs(value) if key in ("models", "solvers", "ratios") else [v for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                items = [value]
            if key in ("nfe", "seeds"):
                return [_as_int(v) for v in items]
            if key == "guidance":
                return [_as_float(v) for v in items]
            return [str(v).strip() for v in items]
        if isinstance(current, bool):
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(current, int):
            return _as_int(value)
        if isinstance(current, float):
            return _as_float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"bad value for '{key}' in {source}: {_short(value)}; expected {_expected(key, current)}") \
            from None


def _expected(key, current) -> str:
    if key in ("nfe", "seeds"):
        return "integers (a comma-separated list in a flag)"
    if key == "guidance":
        return "numbers (a comma-separated list in a flag)"
    if isinstance(current, list):
        return "a list of names"
    if isinstance(current, bool):
        return "true or false"
    return "an integer" if isinstance(current, int) else "a number" if isinstance(current, float) else "text"


def _as_int(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError
    if isinstance(v, float) and not v.is_integer():
        raise ValueError
    return int(str(v).strip()) if isinstance(v, str) else int(v)


def _as_float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError
    return float(v)


def _short(v, limit: int = 60) -> str:
    """repr of a user value for an error line: one line, cut to `limit` characters."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def check_output_dir(path: str | Path, what: str = "run directory"):
    """Before any work: `path` is a directory that exists or can be made, and can be written (probed with an
    empty temp directory, removed at once: permission bits do not stop root, a read-only file system does)."""
    p = Path(path)
    anc = p
    if "\x00" in str(path) or not str(path).strip():
        raise SpecError(f"{what} {_short(str(path))} is not a usable path; accepted: a directory path")
    try:
        if p.exists() and not p.is_dir():
            raise SpecError(f"{what} {path} is an existing file; accepted: a directory (new, or a run to resume)")
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise SpecError(f"{what} {path} cannot be made: {anc} is a file, not a directory; accepted: a path "
                            "whose existing part is directories")
        os.rmdir(tempfile.mkdtemp(prefix=".nfebench-probe-", dir=anc))
    except SpecError:
        raise
    except (OSError, ValueError) as e:
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e)
        raise SpecError(f"{what} {path} cannot be written (in {anc}: {reason}); accepted: a directory on a "
                        "writable file system") from None


def check_output_file(path: str | Path, what: str):
    """A file the run reads and rewrites (the calibration file): not a directory, its folder writable."""
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"{what} {path} is a directory; accepted: a JSON file (read if it exists, extended)")
    check_output_dir(p.parent, f"the folder of {what} {path}:")

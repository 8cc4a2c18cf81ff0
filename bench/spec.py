"""Benchmark specs: a TOML file and/or CLI flags describing a grid of cells.

A cell is (model, solver spec, NFE, guidance, seed). Flags override the file; lists are comma-separated.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from solvers.options import SpecError

METRICS = ("fid", "kid", "traj_rmse", "cond_acc")


@dataclass
class RunSpec:
    models: list[str] = field(default_factory=lambda: ["gmm2d"])
    solvers: list[str] = field(default_factory=lambda: ["ddim", "dpmpp-2m"])
    nfe: list[int] = field(default_factory=lambda: [5, 10, 20])
    guidance: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    samples: int = 2000
    batch_size: int = 0                 # 0: all samples of a cell in one batch
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

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunSpec":
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"spec file not found: {path}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"spec file {path} is not valid TOML: {e}") from None
        data = {**data.pop("run", {}), **data}  # a [run] table or top-level keys
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
        if self.samples < 1:
            raise SpecError(f"samples must be a positive integer, got {self.samples}")
        if any(n < 1 for n in self.nfe):
            raise SpecError(f"NFE values must be positive integers, got {self.nfe}")
        if self.kid_subsets < 1:
            raise SpecError(f"kid_subsets must be a positive integer, got {self.kid_subsets}")
        if self.reference_samples < 0:
            raise SpecError(f"reference_samples must be >= 0 (0 = all samples), got {self.reference_samples}")
        if self.batch_size < 0:
            raise SpecError(f"batch_size must be >= 0 (0 = one batch), got {self.batch_size}")
        if any(g <= 0 for g in self.guidance):
            raise SpecError(f"guidance values must be positive (1 = no guidance), got {self.guidance}")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise SpecError(f"unknown metric '{bad[0]}'; accepted: {', '.join(METRICS)}")
        _check_device(self.device)
        if self.dtype not in ("float32", "float64"):
            raise SpecError(f"dtype must be float32 or float64, got {self.dtype}")
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
                return [float(v) for v in items]
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
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SpecError(f"bad value for '{key}' in {source}: {value!r}") from None


def _as_int(v):
    if isinstance(v, float) and not v.is_integer():
        raise ValueError
    return int(str(v).strip()) if isinstance(v, str) else int(v)

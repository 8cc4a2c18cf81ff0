"""Weight files that ship with the package: safetensors under models/weights/, sha256 recorded in sha256.json.

`load_weights` refuses a missing file or one whose sha256 differs from the recorded value, with one line
naming the file and the command that recreates it (`nfebench train NAME`). `save_weights` writes a file
atomically and records its sha256 next to it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from solvers.options import SpecError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHA_FILE = "sha256.json"


class WeightsError(SpecError):
    """A shipped weights file is missing, unrecorded or corrupt."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recorded_sha256(directory: Path) -> dict[str, str]:
    p = Path(directory) / SHA_FILE
    if not p.is_file():
        return {}
    try:
        return dict(json.loads(p.read_text()))
    except (ValueError, TypeError):
        raise WeightsError(f"cannot read the recorded checksums {p}: not a JSON object of file -> sha256") from None


def weights_path(name: str, directory: str | Path | None = None) -> Path:
    return Path(directory or WEIGHTS_DIR) / f"{name}.safetensors"


def load_weights(name: str, directory: str | Path | None = None, train_cmd: str | None = None):
    """(state_dict, metadata) of `<directory>/<name>.safetensors` after checking its recorded sha256."""
    from safetensors import safe_open

    path = weights_path(name, directory)
    if train_cmd is None:
        train_cmd = f"nfebench train {name}"
        if path.parent.resolve() != WEIGHTS_DIR:
            train_cmd += f" --out {path.parent}"
    cmd = f"`{train_cmd}`"
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing; recreate it with {cmd}")
    expected = recorded_sha256(path.parent).get(path.name)
    if expected is None:
        raise WeightsError(f"no sha256 recorded for {path} in {path.parent / SHA_FILE}; recreate it with {cmd}")
    got = sha256_of(path)
    if got != expected:
        raise WeightsError(f"weights file {path} is corrupt: sha256 {got[:16]}... != recorded {expected[:16]}...; "
                           f"recreate it with {cmd}")
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    meta["sha256"] = got   # the checked checksum: the model's weights_sha256
    return state, meta


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys: safetensors writes the metadata in hash order, so the
    same tensors and metadata would otherwise give different bytes (and sha256) from run to run."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > n:  # cannot happen: the same content, reordered
            raise RuntimeError(f"cannot canonicalise the safetensors header of {path}")
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def save_weights(state: dict[str, torch.Tensor], name: str, directory: str | Path | None = None,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write `<directory>/<name>.safetensors` (atomically) and record its sha256 in `<directory>/sha256.json`."""
    from safetensors.torch import save_file

    directory = Path(directory or WEIGHTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = weights_path(name, directory)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in sorted(state.items())}, str(tmp),
              metadata={k: str(v) for k, v in (metadata or {}).items()})
    _canonical_header(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    sums = recorded_sha256(directory)
    sums[path.name] = sha256_of(path)
    sha_path = directory / SHA_FILE
    tmp = sha_path.with_name(SHA_FILE + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(sums.items())), indent=2) + "\n")
    os.replace(tmp, sha_path)
    return path

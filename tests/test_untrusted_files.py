"""Files a run reads back, or is pointed at, are untrusted (the "trust" issue, items 5, 6 and 12).

- Planted pickles never execute: every cache, samples and weights file is loaded weights-only, torch-fidelity's
  cache and InceptionV3 weights loads included (bench/safe_load.py). The tests set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD,
  so that a torch.load that does not ask for weights_only=True itself behaves as before torch 2.6.
- Corrupt files neither wedge nor poison a run: a bad file is named in one line, moved to RUN/quarantine/ and
  recomputed (bench/runfiles.py); the numbers come out as from a clean run.
- Paths are checked before the work: a bad --fid-stats, --inception-weights, calibration or plugin path stops
  the run with one line before its first cell (bench/preflight.py).
"""
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main

GMM = ["--models", "gmm2d", "--solvers", "ddim", "--samples", "200", "--metrics", "fid,traj_rmse", "-q",
       "--no-plots"]
DIGITS = ["--models", "digits", "--solvers", "ddim", "--guidance", "1", "--samples", "16",
          "--metrics", "fid,kid,traj_rmse", "-q", "--no-plots"]
NUMBERS = ["model", "solver", "nfe", "nfe_used", "guidance", "seed", "n_samples", "fid", "kid", "traj_rmse",
           "diverged_frac"]


@pytest.fixture(autouse=True)
def unsafe_torch_default(monkeypatch):
    """torch.load without an explicit weights_only unpickles anything, as torch < 2.6 did."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


class Planted:
    """A pickle that leaves a marker file when it is loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def plant(path: Path, marker: Path):
    torch.save({"x": Planted(marker)}, path)


def truncate(path: Path):
    b = path.read_bytes()
    path.write_bytes(b[:len(b) // 2])


def numbers(run) -> pd.DataFrame:
    df = pd.read_csv(Path(run) / "results.csv")
    return df[[c for c in NUMBERS if c in df.columns]].sort_values(["nfe", "seed"]).reset_index(drop=True)


def one_line_naming(err: str, path) -> bool:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return "Traceback" not in err and any(str(path) in ln for ln in lines)


def quarantined(run) -> list[str]:
    q = Path(run) / "quarantine"
    return sorted(p.name for p in q.rglob("*") if p.is_file() and p.name != "reasons.log") if q.is_dir() else []


# ---- item 5: planted files never execute ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """A digits run with NFE 2 (seed for the planted files) and a clean one with NFE 2, 3 (the numbers)."""
    base = tmp_path_factory.mktemp("digits")
    assert main(["run", *DIGITS, "--nfe", "2", "--out", str(base / "seed")]) == 0
    assert main(["run", *DIGITS, "--nfe", "2,3", "--out", str(base / "clean")]) == 0
    return base


def _nfe3_shard(run) -> Path:
    """Where the NFE 3 cell's first shard of a DIGITS run is saved while it runs (bench/store.py)."""
    from bench.runner import plan
    from bench.spec import RunConfig
    spec = RunConfig(models=["digits"], solvers=["ddim"], guidance=[1.0], nfe=[3], samples=16,
                     metrics=["fid", "kid", "traj_rmse"])
    cell = plan(spec)[0][0]
    path = Path(run) / "shards" / cell.key / "0-16.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("where", ["reference-cache", "shard"])
def test_planted_pickles_never_run_and_are_recomputed(where, digits_runs, tmp_path, capsys):
    """A planted reference cache (torch pickle) or saved shard (.npz holding a pickled object array)."""
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    shutil.copytree(digits_runs / "seed", run)
    if where == "shard":
        targets = [_nfe3_shard(run)]
        with open(targets[0], "wb") as f:
            np.savez(f, range=np.array([Planted(marker)], dtype=object), ok=np.ones(16, bool))
    else:
        targets = sorted((run / "cache").glob("ref-*.pt"))
        assert targets
        for p in targets:
            plant(p, marker)
    capsys.readouterr()
    rc = main(["run", *DIGITS, "--nfe", "2,3", "--out", str(run)])   # NFE 3 is computed: it reads the caches
    err = capsys.readouterr().err
    assert not marker.exists(), "a planted pickle ran"
    assert rc == 0 and one_line_naming(err, targets[0]) and "moved to" in err
    assert sorted(p.name for p in targets) == quarantined(run)
    pd.testing.assert_frame_equal(numbers(run), numbers(digits_runs / "clean"))


def test_planted_samples_pickle_never_runs(digits_runs, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    shutil.copytree(digits_runs / "seed", run)
    target = next((run / "samples").glob("*.pt"))
    plant(target, marker)
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    err = capsys.readouterr().err
    assert not marker.exists()
    assert one_line_naming(err, target) and quarantined(run) == [target.name]


def test_planted_inception_weights_never_run(tmp_path):
    from bench.inception import feature_extractor
    from solvers import SpecError
    marker, weights = tmp_path / "MARKER", tmp_path / "inception.pt"
    plant(weights, marker)
    with pytest.raises(SpecError) as e:
        feature_extractor(str(weights), False)
    assert not marker.exists()
    assert "\n" not in str(e.value) and str(weights) in str(e.value) and "could run code" in str(e.value)


def test_torch_fidelity_cache_loaders_are_weights_only_and_recompute(tmp_path, capsys):
    import torch_fidelity.metric_fid as tff
    import torch_fidelity.utils as tfu

    from bench.safe_load import patch_torch_fidelity
    patch_torch_fidelity()
    patch_torch_fidelity()   # idempotent
    assert tff.cache_lookup_one_recompute_on_miss is tfu.cache_lookup_one_recompute_on_miss
    marker = tmp_path / "MARKER"
    root = tmp_path / "cache"
    root.mkdir()
    plant(root / "stats.pt", marker)
    item = {"mu": np.zeros(3), "sigma": np.eye(3)}
    got = tfu.cache_lookup_one_recompute_on_miss("stats", lambda: item, cache=True, cache_root=str(root))
    assert not marker.exists() and got is item
    again = tfu.cache_lookup_one_recompute_on_miss("stats", lambda: 1 / 0, cache=True, cache_root=str(root))
    np.testing.assert_array_equal(again["sigma"], np.eye(3))   # the recomputed entry is read back (numpy arrays)
    feats = torch.randn(5, 4)
    for name in ("a-", "b-"):
        plant(root / f"g-{name}f.pt", marker) if name == "a-" else torch.save(feats, root / f"g-{name}f.pt")
    out = tfu.cache_lookup_group_recompute_all_on_any_miss("g-", ["a-f", "b-f"], lambda: {"a-f": feats, "b-f": feats},
                                                           cache=True, cache_root=str(root))
    assert not marker.exists() and set(out) == {"a-f", "b-f"}
    assert "Traceback" not in capsys.readouterr().err


def test_torch_files_of_the_project_load_weights_only(tmp_path):
    from bench.safe_load import UnsafeOrCorruptFile, load_torch_file
    marker = tmp_path / "MARKER"
    plant(tmp_path / "x.pt", marker)
    with pytest.raises(UnsafeOrCorruptFile, match="could run code"):
        load_torch_file(tmp_path / "x.pt")
    assert not marker.exists()


def test_torch_floor_defaults_to_weights_only():
    import tomllib
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = next(d for d in deps if d.startswith("torch>") or d.startswith("torch<") or d.startswith("torch="))
    assert ">=2.6" in torch_dep and "<=2.14.1" in torch_dep


# ---- item 6: corrupt files are moved aside and recomputed ----------------------------------------------------

@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gmm") / "clean"
    assert main(["run", *GMM, "--nfe", "5,10,20", "--fid-changes", "--out", str(run)]) == 0
    return run


def _cell_of(run, nfe: int) -> Path:
    return next(p for p in (run / "cells").glob("*.json") if json.loads(p.read_text())["nfe"] == nfe)


@pytest.mark.parametrize("damage", ["truncated", "empty", "{}", "[]", "nfe-string", "metric-string", "bool-seed"])
def test_bad_cell_file_is_moved_aside_and_rerun(damage, gmm_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(gmm_run, run)
    cell = _cell_of(run, 10)
    row = json.loads(cell.read_text())
    if damage == "truncated":
        truncate(cell)
    elif damage == "empty":
        cell.write_text("")
    elif damage in ("{}", "[]"):
        cell.write_text(damage)
    else:
        key, value = {"nfe-string": ("nfe", "10"), "metric-string": ("fid", "abc"), "bool-seed": ("seed", True)}[damage]
        row[key] = value
        cell.write_text(json.dumps(row))
    capsys.readouterr()
    assert main(["table", str(run)]) == 0   # the other cells still table; the bad one is named and moved aside
    out = capsys.readouterr()
    assert one_line_naming(out.err, cell) and not cell.exists() and quarantined(run) == [cell.name]
    assert "| ddim |" in out.out
    assert main(["run", *GMM, "--nfe", "5,10,20", "--fid-changes", "--out", str(run)]) == 0
    assert cell.is_file()   # rerun
    got, want = numbers(run), numbers(gmm_run)
    pd.testing.assert_frame_equal(got, want)   # same numbers, integer columns still integers
    assert (run / "fid_changes.md").read_text() == (gmm_run / "fid_changes.md").read_text()


def test_cell_schema_accepts_extra_keys_and_checks_the_required_ones():
    from bench.runfiles import check_cell
    row = {"model": "gmm2d", "solver": "ddim", "nfe": 5, "nfe_used": 5, "guidance": 1.0, "seed": 0, "n_samples": 10,
           "fid": None, "kid": "inf", "traj_rmse": 0.1, "cell_id": "abc", "spec_hash": "x", "identity": {"a": 1}}
    assert check_cell(row) is None
    assert check_cell({**row, "guidance": 1}) is None
    for bad in ({"nfe": 5.0}, {"n_samples": 0}, {"guidance": "1"}, {"model": ""}, {"fid": "nan?"}, {"seed": False}):
        assert check_cell({**row, **bad}) is not None, bad
    assert "missing" in check_cell({k: v for k, v in row.items() if k != "nfe_used"})


def test_corrupt_run_json_is_moved_aside(gmm_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(gmm_run, run)
    truncate(run / "run.json")
    capsys.readouterr()
    assert main(["run", *GMM, "--nfe", "5,10,20", "--out", str(run)]) == 0
    assert one_line_naming(capsys.readouterr().err, run / "run.json")
    assert json.loads((run / "run.json").read_text())["spec"]["models"] == ["gmm2d"]


@pytest.mark.parametrize("damage", ["truncated", "pickled", "wrong-shape"])
def test_bad_features_file_is_left_out_and_named(damage, gmm_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(gmm_run, run)
    feats = run / "features" / f"{_cell_of(run, 20).stem}.npz"
    if damage == "truncated":
        truncate(feats)
    elif damage == "pickled":
        np.savez(feats, index=np.array([{"a": 1}], dtype=object), f=np.zeros((1, 2)))
    else:
        z = dict(np.load(feats))
        np.savez(feats, index=z["index"], f=z["f"][:, :1])
    capsys.readouterr()
    assert main(["table", str(run), "--changes"]) == 0
    out = capsys.readouterr()
    assert one_line_naming(out.err, feats) and quarantined(run) == [feats.name]
    assert "5 → 10" in out.out and "10 → 20" not in out.out   # NFE 20's features are gone: its step is left out


@pytest.mark.parametrize("damage", ["truncated", "wrong-values"])
def test_bad_reference_moments_are_named_and_recomputed(damage, gmm_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(gmm_run, run)
    ref = run / "features" / "reference-gmm2d.npz"
    if damage == "truncated":
        truncate(ref)
    else:
        z = dict(np.load(ref))
        np.savez(ref, mu=z["mu"] + 1.0, cov=z["cov"])
    capsys.readouterr()
    assert main(["table", str(run), "--changes"]) == 0
    out = capsys.readouterr()
    assert one_line_naming(out.err, ref) and quarantined(run) == [ref.name]
    feats = [ln for ln in out.err.splitlines() if "features/gmm2d" in ln]
    assert not feats, "a bad reference file must not be blamed on a cell's features"
    assert main(["table", str(gmm_run), "--changes"]) == 0
    assert out.out == capsys.readouterr().out   # recomputed: the same table as the clean run's
    assert ref.is_file()


def test_bad_reference_cache_is_recomputed(gmm_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(gmm_run, run)
    caches = sorted((run / "cache").glob("ref-*.pt"))
    assert caches
    for p in caches:
        truncate(p)
    (run / "cells" / _cell_of(run, 10).name).unlink()   # one cell to compute again: it reads the cache
    capsys.readouterr()
    assert main(["run", *GMM, "--nfe", "5,10,20", "--out", str(run)]) == 0
    assert one_line_naming(capsys.readouterr().err, caches[0])
    pd.testing.assert_frame_equal(numbers(run), numbers(gmm_run))
    assert main(["run", *GMM, "--nfe", "5,10,20", "--out", str(run)]) == 0   # and stays fixed


def test_unreadable_results_csv_is_one_line(tmp_path, capsys):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "results.csv").write_bytes(b"\x00\xff\xfe garbage \"unterminated\n")
    rc = main(["table", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("nfebench: error:") and err.count("\n") == 1


# ---- item 12: paths are checked before the work --------------------------------------------------------------

def _stats(path, dim=2048, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, 8)) / 8
    np.savez(path, mu=rng.standard_normal(dim), sigma=a @ a.T + 1e-3 * np.eye(dim))
    return path


def _bad_input(kind, tmp_path):
    """(extra argv, the path the error must name)"""
    if kind == "fid-stats-missing":
        p = tmp_path / "stats-typo.npz"
        return ["--fid-stats", str(p)], p
    if kind == "fid-stats-truncated":
        p = _stats(tmp_path / "stats.npz")
        truncate(p)
        return ["--fid-stats", str(p)], p
    if kind == "fid-stats-pickled":
        p = tmp_path / "stats.npz"
        np.savez(p, mu=np.array([{"mu": 1}], dtype=object), sigma=np.eye(2))
        return ["--fid-stats", str(p)], p
    if kind == "inception-missing":
        p = tmp_path / "inception-typo.pt"
        return ["--inception-weights", str(p)], p
    if kind == "inception-planted":
        p = tmp_path / "inception.pt"
        plant(p, tmp_path / "MARKER")
        return ["--inception-weights", str(p)], p
    if kind == "inception-truncated":
        p = tmp_path / "inception.pt"
        torch.save({"w": torch.zeros(1000)}, p)
        truncate(p)
        return ["--inception-weights", str(p)], p
    if kind == "calibration-directory":
        p = tmp_path / "caldir"
        p.mkdir()
        return ["--solvers", "unipc+dc", "--calibration", str(p)], p
    if kind == "calibration-not-json":
        p = tmp_path / "cal.json"
        p.write_text("{not json")
        return ["--solvers", "unipc+dc", "--calibration", str(p)], p
    if kind == "calibration-bad-entry":
        p = tmp_path / "cal.json"
        p.write_text(json.dumps({"gmm2d|unipc+dc|nfe=5|g=1|float32": {"ratios": "x"}}))
        return ["--solvers", "unipc+dc", "--calibration", str(p)], p
    if kind == "plugin-directory":
        p = tmp_path / "plugins"
        p.mkdir()
        return ["--plugin", str(p)], p
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fid-stats-missing", "fid-stats-truncated", "fid-stats-pickled", "inception-missing",
                                  "inception-planted", "inception-truncated", "calibration-directory",
                                  "calibration-not-json", "calibration-bad-entry", "plugin-directory"])
def test_bad_paths_stop_the_run_before_its_first_cell(kind, tmp_path, capsys):
    extra, path = _bad_input(kind, tmp_path)
    run = tmp_path / "run"
    argv = ["run", *GMM, "--nfe", "5", "--out", str(run)]
    if "--solvers" in extra:
        i = argv.index("--solvers")
        del argv[i:i + 2]
    rc = main(argv + extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("nfebench: error:") and err.count("\n") == 1, err
    assert str(path) in err and "Traceback" not in err and "allow_pickle" not in err
    assert not list(run.glob("cells/*.json"))
    assert not (tmp_path / "MARKER").exists()


def test_bad_run_calibration_file_is_moved_aside_and_searched_again(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["run", "--models", "gmm2d", "--solvers", "unipc+dc", "--samples", "200", "--metrics", "fid", "-q",
            "--no-plots", "--nfe", "5", "--out", str(run)]
    cal = run / "calibration.json"
    run.mkdir()
    cal.write_text("{truncated")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert one_line_naming(err, cal) and quarantined(run) == ["calibration.json"]
    assert "gmm2d|unipc+dc|nfe=5" in "".join(json.loads(cal.read_text()))


# hub model: a mistyped or missing InceptionV3 file is found before any sample is drawn

@pytest.fixture
def hub_ckpt(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler, UNet2DModel
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))   # no cached InceptionV3 download

    def no_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"test: network disabled ({address})")
        return real(self, address)
    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("test: no DNS")))
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, attention_head_dim=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    root = tmp_path / "ckpt"
    unet.save_pretrained(root)
    DDPMScheduler(num_train_timesteps=1000).save_config(root)
    return root


@pytest.mark.parametrize("weights", ["mistyped", "none-offline"])
def test_hub_run_finds_a_missing_inception_file_before_sampling(weights, hub_ckpt, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["run", "--models", f"hf:{hub_ckpt}", "--solvers", "ddim", "--nfe", "2", "--samples", "4",
            "--metrics", "fid", "--fid-stats", str(_stats(tmp_path / "stats.npz")), "--out", str(run), "--no-plots"]
    if weights == "mistyped":
        argv += ["--inception-weights", str(tmp_path / "inceptoin.pt")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "nfebench: error:" in err and "Traceback" not in err
    assert "cell failed" not in err and not list(run.glob("cells/*.json")) and not list(run.glob("samples/*"))
    assert ("inceptoin.pt" in err) if weights == "mistyped" else ("--inception-weights" in err)

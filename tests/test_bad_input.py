"""Bad input that needs files or a run to show: one clear line naming the problem and what is accepted
(`nfebench: error: ...` on stderr, exit status 2, no traceback) before any work; a full disk stops the grid
with one line and keeps the finished cells; a run never claims tables it did not write."""
import errno
import json
import math
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

import bench.store
from bench import cli
from bench.cli import main
from bench.spec import MAX_NFE, MAX_SAMPLES, MAX_SEED, RunConfig
from solvers import SpecError, get_solver
from solvers.options import as_range, is_numeric_option

SMALL = ["--models", "gmm2d", "--solvers", "ddim", "--nfe", "2", "--samples", "8", "--metrics", "fid", "-q",
         "--no-plots"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("nfebench: error:") and "Traceback" not in err
    return err


def no_cells(out: Path) -> bool:
    return not (out / "cells").exists() or not any((out / "cells").iterdir())


# ---------------------------------------------------------------- spec files

SPEC_CASES = [
    (b'samples = true\n', ["bad value for 'samples'", "True", "expected an integer"]),
    (b'nfe = [true, 5]\n', ["bad value for 'nfe'", "expected integers"]),
    (b'guidance = [true]\n', ["bad value for 'guidance'", "expected numbers"]),
    (b'seeds = [1e20]\n', ["seeds must be integers from 0 to 65535", "100000000000000000000"]),
    (b'guidance = [nan]\n', ["guidance values must be finite and positive"]),
    (b'reference_rtol = inf\n', ["reference_rtol must be a finite number"]),
    (b'samples = 2.5\n', ["bad value for 'samples'"]),
    (b'fid_changes = 1\n', ["bad value for 'fid_changes'", "true or false"]),
    (b'run = "x"\n', ["'run' in spec file", "must be a table"]),
    (b'run = [1, 2]\n', ["'run' in spec file", "must be a table"]),
    (b'name = "x"\n# caf\xe9 in latin-1\n', ["is not UTF-8 text", "UTF-8 TOML file"]),
    (b'name = "../../.."\n', ["name '../../..' is not a single safe path component", "letters, digits"]),
    (b'name = "a/b"\n', ["is not a single safe path component"]),
    (b'name = ".."\n', ["is not a single safe path component"]),
    (b'name = ""\n', ["is not a single safe path component"]),
]


@pytest.mark.parametrize("text,needles", SPEC_CASES, ids=[c[0][:24].decode("latin-1") for c in SPEC_CASES])
def test_bad_spec_file_is_one_line_exit_2(text, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "spec.toml"
    base = [b'models = ["gmm2d"]', b'solvers = ["ddim"]', b'nfe = [2]', b'samples = 8', b'metrics = ["fid"]']
    keys = {line.split(b"=")[0].strip() for line in text.splitlines() if b"=" in line}
    p.write_bytes(b"\n".join(line for line in base if line.split(b"=")[0].strip() not in keys) + b"\n" + text)
    assert main(["run", str(p), "-q", "--no-plots"]) == 2
    err = one_error_line(capsys)
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cells").exists()


def test_spec_name_cannot_leave_runs(tmp_path, monkeypatch):
    """`name = "../../.."` used to write the run three levels above runs/."""
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    (deep / "s.toml").write_text('name = "../../.."\nmodels = ["gmm2d"]\nsolvers = ["ddim"]\nnfe = [2]\n'
                                 'samples = 8\nmetrics = ["fid"]\n')
    assert main(["run", "s.toml", "-q", "--no-plots"]) == 2
    assert list(tmp_path.rglob("run.json")) == []


def test_spec_that_is_a_directory(tmp_path, capsys):
    assert main(["run", str(tmp_path)]) == 2
    assert "is a directory" in one_error_line(capsys)


# ---------------------------------------------------------------- --out

def test_out_at_an_existing_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["run", *SMALL, "--out", str(f)]) == 2
    err = one_error_line(capsys)
    assert f"--out {f} is an existing file" in err and "accepted: a directory" in err
    assert f.read_text() == "x"


def test_out_under_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["run", *SMALL, "--out", str(f / "sub")]) == 2
    err = one_error_line(capsys)
    assert f"{f} is a file, not a directory" in err


def test_out_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the read-only file system is simulated where the probe writes."""
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert main(["run", *SMALL, "--out", str(tmp_path / "ro" / "run")]) == 2
    err = one_error_line(capsys)
    assert "cannot be written" in err and "Read-only file system" in err and str(tmp_path) in err
    assert not (tmp_path / "ro").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")
def test_out_under_proc(capsys):
    """A real file system where no directory can be made, root or not."""
    assert main(["run", *SMALL, "--out", "/proc/nfebench-run"]) == 2
    assert "--out /proc/nfebench-run cannot be written" in one_error_line(capsys)


def test_disk_full_stops_the_grid_and_keeps_finished_cells(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "2,3,4", "--samples", "8", "--metrics", "fid",
            "--no-plots", "--out", str(out)]
    real, written = bench.store.atomic_write, []

    def full_after_one(path, text):
        if Path(path).parent.name == "cells":
            if written:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            written.append(path)
        return real(path, text)
    monkeypatch.setattr(bench.store, "atomic_write", full_after_one)
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    errors = [line for line in lines if line.startswith("nfebench:")]
    assert len(errors) == 1 and errors[0].startswith("nfebench: error: cannot write ")
    assert "No space left on device" in errors[0] and str(out / "cells") in errors[0]
    assert "1 finished cell(s)" in errors[0] and "rerun the same command" in errors[0]
    assert len(list((out / "cells").glob("*.json"))) == 1          # the finished cell is kept
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(bench.store, "atomic_write", real)
    assert main(args) == 0                                          # space again: it resumes
    assert "3 cells: 1 already done, 2 to run" in capsys.readouterr().err
    assert len(pd.read_csv(out / "results.csv")) == 3


# ---------------------------------------------------------------- plugins

def _plugin(tmp_path, body: str, name: str = "plug.py") -> Path:
    p = tmp_path / name
    p.write_text("from solvers import Solver, register_solver\nfrom solvers.ddim import DDIM\n" + body)
    return p


def _unique() -> str:
    return f"plug-{uuid.uuid4().hex[:8]}"


def test_the_same_plugin_twice_loads_once(tmp_path, capsys):
    name = _unique()
    p = _plugin(tmp_path, f"@register_solver('{name}')\nclass Mine(DDIM):\n    'A plugin DDIM.'\n")
    out = tmp_path / "run"
    rel = Path("..") / tmp_path.name / p.name   # the same file by another path
    args = ["run", "--plugin", str(p), "--plugin", str(p), "--models", "gmm2d", "--solvers", name, "--nfe", "2",
            "--samples", "8", "--metrics", "fid", "-q", "--no-plots", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    from bench.plugins import load_plugin_file
    import os
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert load_plugin_file(str(rel)) is load_plugin_file(str(p))
    finally:
        os.chdir(cwd)


def test_a_plugin_in_the_spec_and_the_flag_loads_once(tmp_path, capsys):
    name = _unique()
    p = _plugin(tmp_path, f"@register_solver('{name}')\nclass Mine(DDIM):\n    'A plugin DDIM.'\n")
    spec = tmp_path / "s.toml"
    spec.write_text(f'models = ["gmm2d"]\nsolvers = ["{name}"]\nnfe = [2]\nsamples = 8\nmetrics = ["fid"]\n'
                    f'plugins = ["{p}"]\n')
    out = tmp_path / "run"
    assert main(["run", str(spec), "--plugin", str(p), "-q", "--no-plots", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["spec"]["plugins"] == [str(p)]


@pytest.mark.parametrize("cmd", [["run", *SMALL, "--out", "{tmp}/run"], ["list"]])
def test_a_plugin_taking_a_builtin_name_is_an_error_naming_file_and_name(cmd, tmp_path, capsys):
    p = _plugin(tmp_path, "@register_solver('ddim')\nclass Mine(Solver):\n    'Not DDIM.'\n", "takes_ddim.py")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in cmd] + ["--plugin", str(p)]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert f"plugin file {p}" in err and "solver 'ddim' is already registered" in err and "solvers.ddim" in err
    assert type(get_solver("ddim")).__module__ == "solvers.ddim"        # the built-in is untouched
    assert no_cells(tmp_path / "run")


def test_a_plugin_that_raises_is_one_line(tmp_path, capsys):
    p = _plugin(tmp_path, f"@register_solver('{_unique()}')\nclass Mine(DDIM):\n    'x'\nraise RuntimeError('oops')\n")
    assert main(["list", "--plugin", str(p)]) == 2
    err = one_error_line(capsys)
    assert f"plugin file {p} failed to load: RuntimeError: oops" in err


def test_plugin_errors_in_a_real_process_have_no_traceback(tmp_path):
    p = _plugin(tmp_path, "@register_solver('ddim')\nclass Mine(Solver):\n    'Not DDIM.'\n")
    r = subprocess.run([sys.executable, "-m", "bench", "list", "--plugin", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- what a run says it wrote

def test_all_cells_failed_writes_no_tables_and_says_so(tmp_path, capsys):
    name = _unique()
    p = _plugin(tmp_path, f"@register_solver('{name}')\nclass Boom(Solver):\n    'Raises.'\n"
                          "    def sample(self, *a, **k):\n        raise RuntimeError('boom')\n")
    out = tmp_path / "run"
    assert main(["run", "--plugin", str(p), "--models", "gmm2d", "--solvers", name, "--nfe", "2", "--samples", "8",
                 "--metrics", "fid", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "wrote" not in err and "and plots" not in err
    assert "nfebench: all 1 cell(s) failed, so no tables or plots were written" in err
    assert not (out / "fid_vs_nfe.md").exists()


def test_no_plots_is_not_reported_as_plots(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *[a for a in SMALL if a != "-q"], "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"wrote {out}/results.csv, fid_vs_nfe.md, fid_vs_nfe.tex\n" in err and "and plots" not in err


def test_one_sample_gives_traj_rmse(tmp_path):
    """traj_rmse needs one finite sample (FID and KID need two)."""
    out = tmp_path / "run"
    assert main(["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "4", "--samples", "1",
                 "--metrics", "fid,traj_rmse", "-q", "--no-plots", "--out", str(out)]) == 0
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert math.isfinite(row["traj_rmse"]) and row["traj_rmse"] > 0 and math.isnan(row["fid"])


def test_ratio_against_a_solver_without_values_says_why(tmp_path, capsys):
    name = _unique()
    p = _plugin(tmp_path, f"import torch\n@register_solver('{name}')\nclass Nan(DDIM):\n    'All NaN.'\n"
                          "    def sample(self, denoiser, x_T, plan, generator=None):\n"
                          "        denoiser.x0(x_T, plan.grid[0])\n        return torch.full_like(x_T, float('nan'))\n")
    out = tmp_path / "run"
    assert main(["run", "--plugin", str(p), "--models", "gmm2d", "--solvers", f"{name},ddim", "--nfe", "2",
                 "--samples", "8", "--metrics", "fid", "-q", "--no-plots", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["table", str(out), "--ratio", f"{name}/ddim"]) == 2
    err = one_error_line(capsys)
    assert f"solver '{name}' has no FID value in the run" in err and "No paired cells" not in err
    from bench import ratios
    md = ratios.to_markdown(pd.read_csv(out / "results.csv"), [f"{name}/ddim"])
    assert f"solver '{name}' has no FID value" in md


# ---------------------------------------------------------------- flag-only runs: neutral defaults, runs/

def test_flag_only_run_starts_from_neutral_defaults_in_a_fresh_runs_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "2", "--samples", "8", "--metrics", "fid",
            "--no-plots"]
    assert main(args) == 0
    assert "run directory runs/run" in capsys.readouterr().err
    spec = json.loads((tmp_path / "runs" / "run" / "run.json").read_text())["spec"]
    neutral = RunConfig()
    assert spec["guidance"] == [1.0] and spec["reference_samples"] == 0
    assert spec["kid_subsets"] == neutral.kid_subsets and spec["below_min_nfe"] == neutral.below_min_nfe
    assert not (tmp_path / "results").exists()
    assert main(args) == 0                                    # the same command again resumes its directory
    assert "1 cells: 1 already done, 0 to run -> runs/run" in capsys.readouterr().err
    assert main(args[:-3] + ["--nfe", "3", "--no-plots"]) == 0  # another run: a new directory
    assert "-> runs/run-2" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run", "run-2"]
    assert not (tmp_path / "results").exists()


def _resolved(argv):
    return cli.resolve_spec(cli.build_parser().parse_args(argv))


def test_no_flags_is_still_the_quick_suite():
    spec = _resolved(["run"])
    assert spec.name == "quick" and spec.out == "results/quick" and spec.guidance == [1.0, 4.0]
    for settings in (["--device", "cpu"], ["--out", "elsewhere"], ["--batch-size", "100"]):
        spec = _resolved(["run", *settings])
        assert spec.name == "quick" and spec.reference_samples == 250
    assert _resolved(["run", "--out", "elsewhere"]).out == "elsewhere"


def test_flags_alone_do_not_inherit_the_quick_suite():
    for flags in (["--models", "digits"], ["--solvers", "ddim"], ["--nfe", "5"], ["--samples", "100"]):
        spec = _resolved(["run", *flags])
        assert spec.name == "run" and spec.out == "" and spec.guidance == [1.0] and spec.reference_samples == 0


def test_help_says_what_a_flag_only_run_defaults_to(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "results/quick" in out and "neutral defaults" in out and "guidance 1," in out
    assert "runs/run" in out and "traj_rmse over all samples" in out


# ---------------------------------------------------------------- declared ranges

def _numeric(defaults: dict) -> list[str]:
    return [k for k, v in defaults.items() if is_numeric_option(v)]


def test_every_numeric_solver_option_declares_its_range():
    from solvers import list_solvers
    from solvers.registry import RHO_RANGE, _REGISTRY
    for name in list_solvers():
        cls = _REGISTRY[name]
        if not cls.__module__.startswith("solvers."):
            continue                                   # plugins: finite numbers unless they declare more
        defaults = {"rho": 7.0, **cls.defaults}
        ranges = {"rho": RHO_RANGE, **cls.ranges}
        for key in _numeric(defaults):
            assert key in ranges or key in cls.choices, f"{name}: option {key} declares no range"
            if key in ranges and defaults[key] is not None:
                assert as_range(ranges[key]).contains(defaults[key]), (name, key)   # the default is accepted
        get_solver(name)


def test_every_numeric_model_option_declares_its_range():
    from models.base import _MODELS, _RANGES
    for name, (_, defaults, choices, _) in _MODELS.items():
        for key in _numeric(defaults):
            assert key in _RANGES[name] or key in choices, f"model {name}: option {key} declares no range"
            assert as_range(_RANGES[name][key]).contains(defaults[key]), (name, key)


def test_spec_limits():
    s = RunConfig()
    s.update({"seeds": f"0,{MAX_SEED}", "nfe": f"1,{MAX_NFE}", "samples": MAX_SAMPLES})
    for bad in ({"seeds": str(MAX_SEED + 1)}, {"nfe": str(MAX_NFE + 1)}, {"samples": MAX_SAMPLES + 1},
                {"samples": True}, {"kid_subsets": False}, {"reference_rtol": 1.0}):
        with pytest.raises(SpecError):
            RunConfig().update(bad)

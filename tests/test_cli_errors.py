"""Bad input: one clear line naming the problem and what is accepted, exit status 2, no traceback."""
import subprocess
import sys

import pytest
import torch

from bench.cli import main

CASES = [
    (["run", "--solvers", "ddimm", "--out", "{tmp}"], ["unknown solver 'ddimm'", "ddim"]),
    (["run", "--models", "gmm3d", "--out", "{tmp}"], ["unknown model 'gmm3d'", "gmm2d"]),
    (["run", "--solvers", "ddim:", "--out", "{tmp}"], ["malformed solver spec"]),
    (["run", "--solvers", "ddim:eta", "--out", "{tmp}"], ["malformed option 'eta'", "key=value"]),
    (["run", "--solvers", "ddim:etaa=1", "--out", "{tmp}"], ["unknown option 'etaa'", "eta"]),
    (["run", "--solvers", "ddim:eta=abc", "--out", "{tmp}"], ["eta=abc", "expected float"]),
    (["run", "--solvers", "heun", "--nfe", "1", "--out", "{tmp}"], ["NFE 1 is below the minimum", "heun", "2"]),
    (["run", "--samples", "0", "--out", "{tmp}"], ["samples must be a positive integer"]),
    (["run", "--samples", "-5", "--out", "{tmp}"], ["samples must be a positive integer"]),
    (["run", "--nfe", "five", "--out", "{tmp}"], ["bad value for 'nfe'"]),
    (["run", "--models", "gmm2d:schedule=vq", "--out", "{tmp}"], ["schedule=vq", "vp-discrete"]),
    (["run", "--kid-subsets", "0", "--out", "{tmp}"], ["kid_subsets must be a positive integer"]),
    (["run", "--reference-samples", "-1", "--out", "{tmp}"], ["reference_samples must be >= 0"]),
    (["run", "--below-min-nfe", "drop", "--out", "{tmp}"], ["--below-min-nfe", "'skip'"]),
    (["run", "--device", "gpu", "--out", "{tmp}"], ["unknown device 'gpu'", "cpu, cuda, cuda:<index>"]),
    (["run", "--device", "mps", "--out", "{tmp}"], ["device 'mps' is not supported", "cpu, cuda"]),
    (["run", "nonexistent.toml"], ["spec file not found"]),
    (["table", "{tmp}/nothing"], ["no run found"]),
    (["list", "widgets"], ["invalid choice"]),
    # numbers: type and declared range up front, for flags and solver/model options alike
    (["run", "--guidance", "nan", "--out", "{tmp}"], ["guidance values must be finite and positive"]),
    (["run", "--guidance", "1,inf", "--out", "{tmp}"], ["guidance values must be finite and positive", "inf"]),
    (["run", "--guidance", "0", "--out", "{tmp}"], ["guidance values must be finite and positive"]),
    (["run", "--solvers", "ddim:eta=nan", "--out", "{tmp}"], ["eta=nan", "solver 'ddim'", "need 0 <= eta <= 1"]),
    (["run", "--solvers", "ddim:eta=inf", "--out", "{tmp}"], ["eta=inf", "need 0 <= eta <= 1"]),
    (["run", "--solvers", "ddim:eta=-1", "--out", "{tmp}"], ["eta=-1.0", "need 0 <= eta <= 1"]),
    (["run", "--solvers", "ddim:eta=1e308", "--out", "{tmp}"], ["eta=1e+308", "need 0 <= eta <= 1"]),
    (["run", "--solvers", "heun:rho=nan", "--out", "{tmp}"], ["rho=nan", "solver 'heun'", "need 0 < rho <= 100"]),
    (["run", "--solvers", "ddim:eta=1,eta=0", "--out", "{tmp}"], ["option 'eta' given twice"]),
    (["run", "--solvers", "ode-dopri5:atol=0", "--out", "{tmp}"], ["atol=0.0", "need 0 < atol < 1"]),
    (["run", "--solvers", "cm-multistep:ts=0/x", "--out", "{tmp}"], ["ts=0/x", "index list"]),
    (["run", "--models", "gmm2d-flow:rtol=nan", "--out", "{tmp}"], ["rtol=nan", "model 'gmm2d-flow'", "0 < rtol < 1"]),
    (["run", "--reference-rtol", "-1", "--out", "{tmp}"], ["reference_rtol must be a finite number with 0 < "]),
    (["run", "--reference-rtol", "0", "--out", "{tmp}"], ["reference_rtol must be", "got 0.0"]),
    (["run", "--reference-rtol", "nan", "--out", "{tmp}"], ["reference_rtol must be", "got nan"]),
    (["run", "--seeds", "100000000000000000000", "--out", "{tmp}"], ["seeds must be integers from 0 to 65535"]),
    (["run", "--seeds=-1", "--out", "{tmp}"], ["seeds must be integers from 0 to 65535", "got -1"]),
    (["run", "--seeds", "1e20", "--out", "{tmp}"], ["bad value for 'seeds'", "expected integers"]),
    (["run", "--nfe", "1000000000", "--out", "{tmp}"], ["NFE values must be positive integers, at most 100000"]),
    (["run", "--samples", "100000000", "--out", "{tmp}"], ["samples must be a positive integer, at most 10000000"]),
    (["run", "--kid-subsets", "1000000", "--out", "{tmp}"], ["kid_subsets must be a positive integer, at most"]),
    (["run", "--calibration", ".", "--out", "{tmp}"], ["calibration file . is a directory", "JSON file"]),
    # a grid with nothing in it is refused before any work, not reported as written tables
    (["run", "--models", "gmm2d", "--guidance", "4", "--out", "{tmp}"],
     ["nothing to run: the spec plans 0 cells", "gmm2d is unconditional: guidance 4 skipped"]),
]


@pytest.mark.parametrize("argv,needles", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_one_line_exit_2(argv, needles, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path / "run")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("nfebench: error:")
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "run" / "cells").exists() or not any((tmp_path / "run" / "cells").iterdir())


def test_real_cli_process_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--solvers", "dpmpp-9m", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unknown solver 'dpmpp-9m'" in r.stderr and "dpmpp-2m" in r.stderr


def test_list_solvers_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("ddim", "dpmpp-2m", "dpmpp-3m", "heun", "ode-rk4", "gmm2d"):
        assert name in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_on_a_machine_without_one(tmp_path, capsys):
    assert main(["run", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sees no CUDA device" in err and "accepted here: cpu" in err
    assert not (tmp_path / "run").exists()

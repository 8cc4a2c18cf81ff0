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

"""DC-Solver's cascade polynomial regression (`ratios=cpr`): the fit, its limits and the run path."""
import json

import numpy as np
import pytest

import bench.runner
from bench.calibration import calibration_key
from bench.cli import main
from bench.runner import Runner
from bench.spec import RunConfig
from solvers import SpecError, get_solver
from solvers import dc_cpr


def cascade(coeffs, steps, guidance):
    """The cascade written out level by level (degrees 2 -> 2 -> 3), independently of dc_cpr.features."""
    C = np.asarray(coeffs).reshape(4, 3, 3)
    c, m = guidance / 12, steps / 50
    q = C[:, :, 0] * m ** 2 + C[:, :, 1] * m + C[:, :, 2]              # level 1: NFE
    P = q[:, 0] * c ** 2 + q[:, 1] * c + q[:, 2]                       # level 2: guidance
    return [1.0, 1.0] + [float(sum(P[a] * (i / steps) ** a for a in range(4))) for i in range(3, steps + 1)]


def test_fit_recovers_a_cascade_and_predicts_unseen_pairs():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=36)
    searched = [(s, g, cascade(truth, s, g)) for s in (5, 8, 10, 15, 20) for g in (1.0, 2.0, 3.0, 4.0, 6.0)]
    coeffs = dc_cpr.fit(searched)
    for s, g in ((6, 2.5), (12, 5.0), (25, 1.5)):
        assert np.allclose(dc_cpr.predict(coeffs, s, g), cascade(truth, s, g), rtol=0, atol=1e-8)
    assert dc_cpr.predict(coeffs, 2, 3.0) == [1.0, 1.0]


def test_fit_needs_three_nfes_and_three_guidance_scales():
    searched = [(s, g, [1.0] * s) for s in (5, 8, 10) for g in (1.0, 4.0)]
    with pytest.raises(SpecError, match="3 or more guidance scales, got NFE \\[5, 8, 10\\] and guidance \\[1.0, 4.0\\]"):
        dc_cpr.fit(searched)


def test_cpr_options_are_checked():
    assert get_solver("unipc+dc:ratios=cpr").calibration_spec == "unipc+dc"
    with pytest.raises(SpecError, match="neither guard= nor ratio="):
        get_solver("unipc+dc:guard=true,ratios=cpr")
    with pytest.raises(SpecError, match="neither guard= nor ratio="):
        get_solver("dpmpp-2m+dc:ratio=1.1,ratios=cpr")


def _entry(ratios):
    return {"ratios": ratios, "final_mse_ratio_1": 1.0, "final_mse_calibrated": 0.5}


def _calibration(path, truth, steps_list=(4, 6, 8), scales=(1.0, 2.0, 4.0)):
    data = {calibration_key("gmm2d", "dpmpp-2m+dc", s, g, "float32"): _entry(cascade(truth, s, g))
            for s in steps_list for g in scales}
    path.write_text(json.dumps(data))


def test_a_run_predicts_from_the_calibration_file_and_a_new_file_is_a_new_cell(tmp_path):
    truth = np.random.default_rng(1).normal(scale=0.05, size=36)
    truth[2] += 1.0           # rho ~ 1 + small terms
    cal = tmp_path / "cal.json"
    _calibration(cal, truth)
    spec = RunConfig(models=["gmm2d"], solvers=["dpmpp-2m+dc:ratios=cpr"], nfe=[5], samples=64,
                     metrics=["fid"], calibration=str(cal))
    r = Runner(spec, tmp_path / "run", log=lambda *_: None).run()
    assert r["cells"] == 1 and not r["failed"]
    ident = json.loads(next((tmp_path / "run" / "cells").glob("*.json")).read_text())["identity"]
    assert "cpr_fitted_on" in ident
    # the ratios the run uses are the prediction of the fit on the file's entries
    runner = Runner(spec, tmp_path / "x", log=lambda *_: None)
    solver = get_solver("dpmpp-2m+dc:ratios=cpr")
    cell = next(c for c in bench.runner.plan(spec)[0])
    plan = solver.plan(runner.model("gmm2d").schedule, 5)
    want = dc_cpr.predict(dc_cpr.fit([(s, g, cascade(truth, s, g)) for s in (4, 6, 8) for g in (1.0, 2.0, 4.0)]),
                          plan.steps, 1.0)
    assert runner.calibrated_ratios(cell, runner.model("gmm2d"), solver, plan) == want
    # another calibration file: another prediction, so the cell's identity changes and the directory refuses it
    _calibration(cal, truth * 1.1)
    with pytest.raises(SpecError, match="another setup"):
        Runner(spec, tmp_path / "run", log=lambda *_: None).run()


def test_cpr_without_a_calibration_file_or_with_too_little_is_one_line(tmp_path, capsys):
    rc = main(["run", "--models", "gmm2d", "--solvers", "unipc+dc:ratios=cpr", "--nfe", "5", "--out",
               str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "give --calibration FILE" in err
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({calibration_key("gmm2d", "unipc+dc", 5, 1.0, "float32"): _entry([1.0] * 5)}))
    rc = main(["run", "--models", "gmm2d", "--solvers", "unipc+dc:ratios=cpr", "--nfe", "5", "--calibration",
               str(cal), "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "3 or more NFEs" in err
    assert not (tmp_path / "r" / "cells").exists()
    rc = main(["calibrate", "--models", "gmm2d", "--solvers", "unipc+dc:ratios=cpr", "--out", str(cal)])
    assert rc == 2 and "calibrate unipc+dc instead" in capsys.readouterr().err

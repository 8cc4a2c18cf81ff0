"""TOML specs, flag overrides and list splitting."""
from pathlib import Path

import pandas as pd
import pytest

from bench.spec import RunConfig, split_specs
from solvers import SpecError


def test_split_specs_keeps_options_with_their_solver():
    assert split_specs("ddim,dpmpp-2m:lower_order_final=false,solver_type=taylor,heun") == [
        "ddim", "dpmpp-2m:lower_order_final=false,solver_type=taylor", "heun"]


def test_toml_then_flags_override(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "x"\nmodels = ["gmm2d"]\nsolvers = ["ddim", "heun"]\nnfe = [4, 8]\nseeds = [0, 1]\n'
                 'samples = 100\n')
    spec = RunConfig.from_toml(p)
    assert spec.solvers == ["ddim", "heun"] and spec.nfe == [4, 8] and spec.out.endswith("x")
    spec.update({"nfe": "5,10", "solvers": "dpmpp-2m:lower_order_final=false", "samples": 50})
    assert spec.nfe == [5, 10] and spec.solvers == ["dpmpp-2m:lower_order_final=false"] and spec.samples == 50
    assert spec.seeds == [0, 1]


def test_unknown_key_and_bad_toml(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("nfes = [1]\n")
    with pytest.raises(SpecError, match="unknown key 'nfes'"):
        RunConfig.from_toml(p)
    p.write_text("nfe = [1,\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        RunConfig.from_toml(p)


def test_shipped_suites_parse():
    from bench.cli import _suite_path
    for name in ("quick", "standard", "time-shift-momentum", "consistency", "ctm-digits-flow", "digits-cd",
                 "stochastic", "flow"):
        spec = RunConfig.from_toml(_suite_path(name))
        assert spec.models and spec.solvers and spec.nfe


def test_standard_suite_covers_the_registry_and_embedded_models():
    """`standard` = every fixed-budget solver on every embedded model, NFE 3..50, guidance 1 and a high value
    (consistency samplers and the consistency model digits-cd excepted: suite digits-cd pairs them; and the flow
    samplers, which step a rectified flow's velocity and refuse the suite's VP models; the rectified-flow model
    digits-fm is suite flow's)."""
    from bench.cli import _suite_path
    from models import list_models
    from solvers import get_solver, list_solvers
    spec = RunConfig.from_toml(_suite_path("standard"))
    shipped = {n for n in list_solvers() if type(get_solver(n)).__module__.startswith("solvers.")}  # no plugins
    fixed_budget = {n for n in shipped if not get_solver(n).adaptive
                    and not get_solver(n).consistency_sampler and not get_solver(n).flow_sampler}
    assert {s.split(":")[0] for s in spec.solvers} == fixed_budget   # plus option variants (guard=true)
    # the committed run holds every solver of the suite but those added since it was made: the two combinations
    # of the multistep core (issue 17) and issue 19's samplers, computed into results/standard by the regeneration
    # under way (it resumes: `nfebench run standard`)
    not_yet = {"unipc+ts", "dpmpp-3m+dc", "euler-ancestral", "dpmpp-2s-ancestral", "dpmpp-sde", "dpmpp-2m-sde",
               "dpmpp-3m-sde", "lms", "ipndm", "ipndm-v", "sa-solver", "restart", "deis"}
    committed = set(pd.read_csv(Path(__file__).parents[1] / "results" / "standard" / "results.csv").solver)
    assert set(spec.solvers) - committed == not_yet
    consistency_models = {"digits-cd"}          # run by the consistency samplers only (suite digits-cd)
    flow_models = {"digits-fm"}                 # rectified flows: suite flow
    assert set(spec.models) == {m for m in list_models() if not m.startswith("hf:") and not m.endswith("-flow")
                                and m not in consistency_models | flow_models}
    assert min(spec.nfe) == 3 and max(spec.nfe) == 50
    assert 1.0 in spec.guidance and max(spec.guidance) >= 4 and len(spec.seeds) == 3


def test_flow_suite_covers_the_rectified_flow_models():
    """`flow` = every fixed-budget solver but the consistency samplers (the flow samplers included) on digits-fm
    and the exact oracles on the rectified-flow schedule, NFE 3..50, guidance 1 and 4, 3 seeds, plus shifted
    variants paired with their unshifted solvers."""
    from bench.cli import _suite_path
    from bench.ratios import check_pairs
    from models import model_options
    from solvers import get_solver, list_solvers
    spec = RunConfig.from_toml(_suite_path("flow"))
    assert [model_options(m) for m in spec.models] == [
        ("digits-fm", {"weights": ""}), ("gmm2d", {"schedule": "rectified-flow", "prediction": "flow"}),
        ("digits-oracle", {"schedule": "rectified-flow"})]
    shipped = {n for n in list_solvers() if type(get_solver(n)).__module__.startswith("solvers.")}  # no plugins
    assert {s.split(":")[0] for s in spec.solvers} == {n for n in shipped if not get_solver(n).adaptive
                                                      and not get_solver(n).consistency_sampler}
    standard = RunConfig.from_toml(_suite_path("standard"))
    assert set(standard.solvers) <= set(spec.solvers)
    shifted = [s for s in spec.solvers if "shift=" in s]
    assert shifted and {m for m, _ in check_pairs(spec.ratios, spec.solvers)} == set(shifted)
    assert spec.nfe == [3, 4, 5, 6, 8, 10, 15, 20, 30, 50] and spec.guidance == [1.0, 4.0] and spec.seeds == [0, 1, 2]


def test_consistency_suite_covers_the_flow_maps():
    """`consistency` = ctm-gamma at gamma 0, 0.5, 1 on every exact flow map (the trajectory models)."""
    from bench.cli import _suite_path
    from models import list_models, model_options
    spec = RunConfig.from_toml(_suite_path("consistency"))
    assert {model_options(m)[0] for m in spec.models} == {m for m in list_models() if m.endswith("-flow")}
    assert {s.split(":")[0] for s in spec.solvers} == {"ctm-gamma"}
    assert min(spec.nfe) == 1 and len(spec.seeds) >= 2


def test_digits_cd_suite_runs_the_consistency_samplers():
    from bench.cli import _suite_path
    from solvers import get_solver, list_solvers
    spec = RunConfig.from_toml(_suite_path("digits-cd"))
    assert spec.models == ["digits-cd"]
    assert {s.split(":")[0] for s in spec.solvers} == {n for n in list_solvers()
                                                      if get_solver(n).consistency_sampler}
    assert min(spec.nfe) == 1 and max(spec.nfe) == 17 and len(spec.seeds) == 3   # N = 18: at most 17 steps


def test_kid_subsets_from_file_and_flags(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("kid_subsets = 7\n")
    spec = RunConfig.from_toml(p)
    assert spec.kid_subsets == 7
    spec.update({"kid_subsets": "3"})
    assert spec.kid_subsets == 3
    with pytest.raises(SpecError, match="kid_subsets must be a positive integer"):
        spec.update({"kid_subsets": 0})

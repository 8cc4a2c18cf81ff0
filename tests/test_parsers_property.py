"""Property tests of the input parsers: any text either parses to a valid spec or is refused with SpecError
(the CLI: exit status 2 and exactly one stderr line); never another exception. No sampling happens here."""
import json
import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import bench.runner
from bench.cli import main
from bench.spec import NUMBERS, RunConfig
from models import list_models, model_options
from models.base import _MODELS
from solvers import SpecError, get_solver, list_solvers
from solvers.grids import GRIDS
from solvers.options import as_range, parse_spec
from solvers.registry import _REGISTRY

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])

SOLVERS = sorted(n for n in list_solvers() if _REGISTRY[n].__module__.startswith("solvers."))
MODELS = sorted(m for m in list_models() if not m.startswith("hf:"))
OPTION_KEYS = sorted({"grid", "rho", "shift", *(k for n in SOLVERS for k in _REGISTRY[n].defaults),
                      *(k for m in MODELS for k in _MODELS[m][1])})
TRICKY = ["nan", "-nan", "inf", "-inf", "1e308", "1e-320", "-1", "0", "1", "2", "3", "0.5", "true", "false", "yes",
          "1_000", "0x10", "3.8", "1e20", "100000000000000000000", " ", "", "=", ":", ",", "/", "0/22/39", "karras",
          "logSNR", "leading", "ve", "vp-linear", "rectified-flow", "flow", "taylor", "bh2", "heun", "prk", "f-pndm", "float32", "x0", "v"]

option_values = st.one_of(st.sampled_from(TRICKY), st.sampled_from(sorted(GRIDS)), st.integers().map(str),
                          st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8))


def _spec_text(name, opts):
    return name + (":" + ",".join(f"{k}={v}" for k, v in opts) if opts else "")


def _own_options(keys):
    return st.lists(st.tuples(st.sampled_from(sorted(keys)), option_values), max_size=3)


solver_texts = st.one_of(
    st.sampled_from(SOLVERS).flatmap(   # the solver's own options: mostly reaching the value checks
        lambda n: st.builds(_spec_text, st.just(n), _own_options({"grid", "rho", "shift", *_REGISTRY[n].defaults}))),
    st.builds(_spec_text, st.sampled_from(SOLVERS), st.lists(st.tuples(st.sampled_from(OPTION_KEYS), option_values),
                                                               max_size=3)),
    st.builds(_spec_text, st.sampled_from(SOLVERS),
              st.lists(st.tuples(st.text(max_size=5), option_values), max_size=2)),
    st.text(max_size=30))
registered_model_texts = st.one_of(
    st.sampled_from(MODELS).flatmap(
        lambda m: st.builds(_spec_text, st.just(m), _own_options(_MODELS[m][1] or {"x"}))),
    st.builds(_spec_text, st.sampled_from(MODELS), st.lists(st.tuples(st.sampled_from(OPTION_KEYS), option_values),
                                                             max_size=3)))
model_texts = st.one_of(
    registered_model_texts,
    st.builds(lambda t, o: "hf:" + _spec_text(t, o), st.text(max_size=10),
              st.lists(st.tuples(st.sampled_from(["num_classes", "revision", "reference"]), option_values),
                       max_size=2)),
    st.text(max_size=30))


@SETTINGS
@given(st.text(max_size=40))
def test_parse_spec_parses_or_refuses(text):
    try:
        name, opts = parse_spec(text, "solver")
    except SpecError as e:
        assert str(e).strip()
        return
    assert name and name == name.strip() and all(k and v for k, v in opts.items())


def _finite_unless_declared(solver) -> bool:
    """Every float option is finite, except where the solver declares a range that allows inf (EDM's S_tmax)."""
    ranges = type(solver).ranges
    return all(math.isfinite(v) or (k in ranges and as_range(ranges[k]).allow_inf)
               for k, v in solver.options.items() if isinstance(v, float))


@SETTINGS
@given(solver_texts)
@example("ddim:eta=nan")
@example("ddim:eta=1e308")
@example("heun:rho=inf")
@example("flow-euler:shift=nan")
@example("ode-dopri5:rtol=0")
def test_get_solver_builds_a_valid_solver_or_refuses(text):
    try:
        solver = get_solver(text)
    except SpecError as e:
        assert str(e).strip()
        return
    assert _finite_unless_declared(solver), text
    again = get_solver(solver.spec)          # a valid solver's canonical spec is valid and names it again
    assert again.spec == solver.spec


@SETTINGS
@given(model_texts)
@example("gmm2d-flow:rtol=nan")
@example("hf:x:num_classes=-3")
def test_model_options_parse_or_refuse(text):
    try:
        name, opts = model_options(text)
    except SpecError as e:
        assert str(e).strip()
        return
    assert name.startswith("hf:") or name in MODELS
    assert all(math.isfinite(v) for v in opts.values() if isinstance(v, float))


FIELDS = [f.name for f in fields(RunConfig)]
scalars = st.one_of(st.text(max_size=12), st.integers(), st.integers(min_value=-10, max_value=10),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.sampled_from(TRICKY))
flag_values = st.one_of(scalars, st.lists(scalars, max_size=4), st.none(),
                        st.lists(st.integers(min_value=-2, max_value=2_000_000), min_size=1, max_size=3)
                        .map(lambda v: ",".join(map(str, v))))


def _assert_valid(spec: RunConfig):
    spec.validate()
    for key, (rng, _) in NUMBERS.items():
        value = getattr(spec, key)
        for v in value if isinstance(value, list) else [value]:
            assert not isinstance(v, bool) and rng.contains(v), (key, v)


@SETTINGS
@given(st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), flag_values, max_size=5))
@example({"guidance": "nan"})
@example({"samples": True})
@example({"seeds": [1e20]})
@example({"reference_rtol": -1.0})
def test_runspec_update_with_flags_is_valid_or_refused(flags):
    spec = RunConfig()
    try:
        spec.update(flags)
    except SpecError as e:
        assert str(e).strip()
        return
    _assert_valid(spec)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)              # a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"


toml_scalars = st.one_of(st.text(max_size=10), st.integers(min_value=-2**63, max_value=2**63 - 1),
                         st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.sampled_from(TRICKY))
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=6)
toml_docs = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(FIELDS + ["run"]), st.text(max_size=6)), toml_values, max_size=6)
    .map(lambda d: "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in d.items()).encode()),
    st.text(max_size=60).map(str.encode),
    st.binary(max_size=60))
_DIR = Path(tempfile.mkdtemp(prefix="nfebench-prop-"))


@SETTINGS
@given(toml_docs)
@example(b"samples = true")
@example(b"nfe = [true, 5]")
@example(b'run = "x"')
@example(b'name = "../../.."')
@example(b"\xff\xfe")
def test_from_toml_is_valid_or_refused(data):
    p = _DIR / "spec.toml"
    p.write_bytes(data)
    try:
        spec = RunConfig.from_toml(p)
    except SpecError as e:
        assert str(e).strip()
        return
    _assert_valid(spec)
    assert spec.out == str(Path("runs") / spec.name) or "out" in data.decode()


class Planned(Exception):
    """Raised instead of running: the CLI got through validation and planning."""


CLI_FLAGS = {
    "--models": st.one_of(st.sampled_from(["gmm2d", "gmm2d:schedule=ve", "digits-oracle", "gmm2d-flow",
                                           "gmm2d,gmm2d:prediction=eps"]), registered_model_texts,
                          st.text(max_size=12).filter(lambda t: "hf:" not in t)),
    "--solvers": st.one_of(st.lists(st.sampled_from(SOLVERS), min_size=1, max_size=3).map(",".join), solver_texts),
    "--nfe": st.one_of(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=4).map(
        lambda v: ",".join(map(str, v))), flag_values.map(
        lambda v: v if isinstance(v, str) else ",".join(map(str, v)) if isinstance(v, list) else str(v))),
    "--guidance": st.one_of(st.sampled_from(["1", "1,4", "nan", "inf", "0", "-1", "1e308"]), st.text(max_size=6)),
    "--seeds": st.one_of(st.sampled_from(["0", "0,1", "-1", "65535", "65536", "1e20", "true"]),
                         st.text(max_size=6)),
    "--samples": st.one_of(st.integers(min_value=-5, max_value=20_000_000).map(str), st.text(max_size=5)),
    "--batch-size": st.one_of(st.integers(min_value=-5, max_value=100).map(str), st.text(max_size=4)),
    "--metrics": st.one_of(st.sampled_from(["fid", "fid,kid,traj_rmse", "cond_acc", "fidd"]), st.text(max_size=6)),
    "--dtype": st.one_of(st.sampled_from(["float32", "float64", "float16"]), st.text(max_size=5)),
    "--device": st.one_of(st.sampled_from(["cpu", "cuda", "cuda:0", "mps", "cpu:0"]), st.text(max_size=6)),
    "--below-min-nfe": st.sampled_from(["error", "skip", "skip", "drop"]),
    "--kid-subsets": st.one_of(st.integers(min_value=-2, max_value=20_000).map(str), st.text(max_size=4)),
    "--reference-rtol": st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=5)),
    "--reference-samples": st.one_of(st.integers(min_value=-3, max_value=20_000_000).map(str), st.text(max_size=4)),
    "--ratios": st.one_of(st.sampled_from(["ddim/dpmpp-2m", "a/b/c", "x"]), st.text(max_size=6)),
}
cli_argv = st.dictionaries(st.sampled_from(sorted(CLI_FLAGS)), st.just(None), min_size=1, max_size=6).flatmap(
    lambda d: st.fixed_dictionaries({k: CLI_FLAGS[k] for k in d}))


@pytest.fixture
def no_running(monkeypatch, tmp_path):
    def planned(self):
        raise Planned(self.spec)
    monkeypatch.setattr(bench.runner.Runner, "run", planned)
    cwd = os.getcwd()
    os.chdir(tmp_path)        # nothing may land in the checkout
    yield tmp_path
    os.chdir(cwd)


@SETTINGS
@given(cli_argv)
@example({"--models": "gmm2d", "--guidance": "nan"})
@example({"--models": "gmm2d", "--seeds": "100000000000000000000"})
@example({"--models": "gmm2d", "--solvers": "ddim:eta=inf"})
@example({"--models": "gmm2d", "--reference-rtol": "0"})
def test_cli_run_plans_or_fails_with_one_line(no_running, capsys, flags):
    capsys.readouterr()
    argv = ["run", *(f"{k}={v}" for k, v in flags.items()), "--out", str(no_running / "run"), "-q"]
    try:
        rc = main(argv)
    except Planned as e:
        event("planned")
        assert capsys.readouterr().err == ""
        spec = e.args[0]
        _assert_valid(spec)                    # what reached planning is valid, down to the options
        for s in spec.solvers:
            assert _finite_unless_declared(get_solver(s)), s
        for m in spec.models:
            assert all(math.isfinite(v) for v in model_options(m)[1].values() if isinstance(v, float)), m
        return
    event("refused")
    out, err = capsys.readouterr()
    assert rc == 2, (argv, rc, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("nfebench: error: "), (argv, err)
    assert out == ""
    assert not (no_running / "run" / "cells").exists()

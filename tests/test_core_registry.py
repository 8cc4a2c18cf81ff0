"""Solver registry and option errors: one clear message naming what was wrong and what is accepted."""
import pytest

import solvers
from solvers import SpecError, get_solver


def test_unknown_solver_names_close_matches():
    with pytest.raises(SpecError, match=r"unknown solver 'dpmpp2m'.*dpmpp-2m"):
        get_solver("dpmpp2m")
    with pytest.raises(SpecError, match=r"unknown solver 'dim'.*ddim"):
        get_solver("dim:eta=1")


@pytest.mark.parametrize("spec,pattern", [
    ("ddim:", r"malformed solver spec 'ddim:'.*nothing after ':'"),
    ("ddim:eta", r"malformed option 'eta'.*expected key=value"),
    ("ddim:eta=", r"malformed option 'eta='"),
    ("ddim:=1", r"malformed option '=1'"),
    ("ddim:eta=1,", r"malformed option ''"),
    (":eta=1", r"malformed solver spec"),
    ("", r"malformed solver spec"),
])
def test_malformed_specs(spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        get_solver(spec)


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(SpecError, match=r"unknown option 'order' for solver 'dpmpp-2m'; accepted options: "
                                        r"grid, lower_order_final, rho, shift, solver_type"):
        get_solver("dpmpp-2m:order=3")


@pytest.mark.parametrize("spec,pattern", [
    ("ddim:eta=abc", r"option eta=abc for solver 'ddim' is not valid: expected float"),
    ("dpmpp-2m:lower_order_final=maybe", r"lower_order_final=maybe .* expected true/false"),
    ("dpmpp-2m:solver_type=midpoint", r"solver_type=midpoint .* not accepted; choose one of: dpmsolver, taylor"),
    ("ddim:grid=uniform", r"grid=uniform .* choose one of: time_uniform, logSNR"),
    ("ode-dopri5:rtol=tight", r"rtol=tight .* expected float"),
])
def test_bad_values(spec, pattern):
    with pytest.raises(SpecError, match=pattern):
        get_solver(spec)


def test_options_are_typed_and_the_spec_round_trips():
    s = get_solver("dpmpp-2m:lower_order_final=false,grid=karras,rho=5")
    assert s.lower_order_final is False and s.grid == "karras" and s.rho == 5.0
    assert get_solver(s.spec).spec == s.spec == "dpmpp-2m:grid=karras,lower_order_final=false,rho=5.0"  # sorted
    assert get_solver("ddim").spec == "ddim" and get_solver("ddim").eta == 0.0


@pytest.mark.parametrize("name,minimum", [("heun", 2), ("ode-midpoint", 2), ("ode-rk4", 4), ("ddim", 1),
                                          ("dpm-solver-3", 1)])
def test_nfe_below_min_nfe_names_the_minimum(name, minimum):
    s = get_solver(name)
    assert s.min_nfe == minimum
    with pytest.raises(solvers.BelowMinimumNFE,
                       match=rf"NFE {minimum - 1} is below the minimum for solver '{name}': {minimum}"):
        s.plan(solvers.VPLinear(), minimum - 1)
    assert s.plan(solvers.VPLinear(), minimum).nfe == minimum


def test_list_solvers_has_summaries():
    listed = solvers.list_solvers()
    assert list(listed) == sorted(listed)
    for name in ("ddim", "dpmpp-3m", "ode-dopri5"):
        assert listed[name]


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        @solvers.register_solver("ddim")
        class Other(solvers.Solver):
            """Not DDIM."""

"""Figures of a run (bench/figures.py) and the solvers' declared family and base they read: every solver has a
family, each seed modifier names its base; the heatmap frames the best cell and hatches the cells it must not
rank; the family panels keep a modifier with its base; the ratio pairs are found; files come in every format
under the names the report looks for."""
import pandas as pd
import pytest

from bench import figures
from solvers import get_solver, list_solvers
from solvers.registry import _REGISTRY, FAMILIES
from tests.test_leaders import make_run

MODIFIERS = {"ddim+ts": "ddim:grid=leading", "ddim+ts:grid=time_uniform": "ddim", "pndm+ts": "s-pndm",
             "pndm+ts:variant=f-pndm": "f-pndm", "dpm-solver+ts": "dpmpp-2m", "dpm-solver+ts:order=3": "dpmpp-3m",
             "unipc+ts": "unipc", "plms+hb": "plms", "plms+hb:order=3": "plms:order=3", "dpmpp-2m+hb": "dpmpp-2m",
             "unipc+dc:guard=true": "unipc", "dpmpp-2m+dc": "dpmpp-2m", "dpmpp-3m+dc": "dpmpp-3m"}


def test_every_registered_solver_declares_a_family_and_each_modifier_its_base():
    for name in list_solvers():
        cls = _REGISTRY[name]
        if not cls.__module__.startswith("solvers."):   # a plugin another test loaded: "other" is its due
            continue
        assert cls.family in FAMILIES and cls.family != "other", f"{name} declares no family"
        solver = get_solver(name)
        assert (solver.base is not None) == (cls.family == "seed modifier") == ("+" in name), name
    for spec, base in MODIFIERS.items():
        assert get_solver(spec).base_spec == base, spec
    assert get_solver("ddim").base_spec is None


def test_modifier_pairs_of_the_time_shift_momentum_suite():
    run = ["ddim:grid=leading", "ddim+ts", "ddim", "ddim+ts:grid=time_uniform", "s-pndm", "pndm+ts", "dpmpp-2m",
           "dpm-solver+ts", "plms", "plms+hb", "ghvb", "dpmpp-2m+hb", "dpmpp-3m", "unipc", "unipc+dc", "my-plugin"]
    assert figures.modifier_pairs(run) == [
        ("ddim+ts", "ddim:grid=leading"), ("ddim+ts:grid=time_uniform", "ddim"), ("pndm+ts", "s-pndm"),
        ("dpm-solver+ts", "dpmpp-2m"), ("plms+hb", "plms"), ("dpmpp-2m+hb", "dpmpp-2m"), ("unipc+dc", "unipc")]
    assert figures.family("my-plugin") == "other"


def test_family_panels_keep_modifiers_with_their_base_and_split_long_families():
    panels = dict(figures.family_panels_of(["unipc", "ddim", "euler", "unipc+dc", "plms+hb", "plms", "restart"]))
    assert panels == {"exponential integrator": ["unipc", "unipc+dc", "ddim"],
                      "linear multistep": ["plms+hb", "plms"],
                      "singlestep and generic ODE": ["euler"], "stochastic": ["restart"]}
    many = ["ddim", "dpm-solver-1", "dpm-solver-2", "unipc", "unipc+dc", "unipc+ts", "deis"]
    split = figures.family_panels_of(many, max_lines=4)
    assert [t for t, _ in split] == ["exponential integrator (1/2)", "exponential integrator (2/2)"]
    assert split[1][1] == ["unipc", "unipc+dc", "unipc+ts", "deis"]   # unipc's group is not cut


def _grid():
    """3 solvers x NFE 4, 8: 'b' best at 4, 'c' best at 8; 'a' over budget at 8 (9 NFE used, FID 0.1: lower
    than every other, still never the best), 'b' short of NFE 8 and 'c' with diverged samples at NFE 4."""
    rows = []
    for seed in (0, 1):
        for solver, nfe, fid, used, div in (("a", 4, 5.0, 4, 0), ("a", 8, 0.1, 9, 0), ("b", 4, 2.0, 4, 0),
                                            ("b", 8, 1.0, 7, 0), ("c", 4, 9.0, 4, 0.1), ("c", 8, 0.5, 8, 0)):
            rows.append(dict(model="toy", solver=solver, nfe=nfe, nfe_used=used, guidance=1.0, seed=seed,
                             n_samples=10, fid=fid + 0.01 * seed, cond_acc=0.5, diverged_frac=div))
    return pd.DataFrame(rows)


def _gids(fig):
    return {p.get_gid() for ax in fig.axes for p in ax.patches + ax.lines if p.get_gid()}


def test_heatmap_frames_the_best_within_budget_and_hatches_what_it_must_not_rank():
    fig = figures._heatmap_figure(_grid(), "toy", 1.0, "fid")
    gids = _gids(fig)
    assert {g for g in gids if g.startswith("best")} == {"best b 4", "best c 8"}
    assert {g for g in gids if not g.startswith("best")} == {"over a 8", "short b 8", "diverged c 4"}
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c", "a"]      # by mean rank within budget
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    assert cells[(1, 2)] == "0.105" and cells[(0, 0)] == "2"                    # 'a' at 8 shown, hatched


def _legend_labels(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_heatmap_legend_names_blank_cells_only_when_a_solver_was_not_run_at_some_nfe():
    grid = _grid()
    blank = "blank: not run (below its minimum NFE)"
    assert blank not in _legend_labels(figures._heatmap_figure(grid, "toy", 1.0, "fid"))
    no_cell = grid[~((grid["solver"] == "a") & (grid["nfe"] == 4))]   # 'a' below its minimum at NFE 4
    assert blank in _legend_labels(figures._heatmap_figure(no_cell, "toy", 1.0, "fid"))


def test_leaders_figure_fills_resolved_and_leaves_ties_hollow(tmp_path):
    df = make_run(tmp_path, {"a": (0.2, 1), "copy": (0.2, 1), "far": (1.0, 3)})
    fig = figures._leaders_figure(figures.leaders_frame(df, tmp_path, replicates=20), "toy", 1.0, "fid")
    assert _gids(fig) == {"tie a 5", "tie copy 5", "resolved far 5"}
    line = next(ln for ln in fig.axes[0].lines if ln.get_gid() == "tie copy 5")
    assert line.get_markerfacecolor() == "white"


def test_family_figure_dashes_modifiers():
    df = _grid().replace({"solver": {"a": "unipc", "b": "unipc+dc", "c": "euler"}})
    fig = figures._family_figure(df, "toy", 1.0, "fid")
    gids = _gids(fig)
    assert gids == {"line unipc", "modifier unipc+dc", "line euler"}
    dashed = next(ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "modifier unipc+dc")
    assert dashed.get_linestyle() == "--"
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[1])


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_write_figures_names_every_kind_in_each_format(tmp_path, fmt):
    make_run(tmp_path, {"unipc": (0.0, 1), "unipc+dc": (0.3, 2), "euler": (1.0, 3)}, seeds=(0, 1), nfes=(4, 8),
             model="hf:org/repo")
    got = figures.write_figures(tmp_path, fmt=fmt, labels={"hf:org/repo": "tiny"})
    assert {k: [p.name for p in v] for k, v in got.items()} == {
        "leaders": [f"leaders_fid_tiny_g1.{fmt}"], "heatmap": [f"heatmap_fid_tiny_g1.{fmt}"],
        "family": [f"family_fid_tiny_g1.{fmt}"], "ratio": [f"ratio_fid_tiny_g1.{fmt}"]}
    for paths in got.values():
        head = paths[0].read_bytes()[:8]
        assert head.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[fmt])


def test_ratio_heatmap_marks_agreeing_seeds(tmp_path):
    df = _grid().replace({"solver": {"a": "unipc", "b": "unipc+dc", "c": "euler"}})
    r = figures.ratios.paired_ratios(df, ["unipc+dc/unipc"], "fid")
    fig = figures._ratio_figure(r, "toy", 1.0, "fid")
    assert _gids(fig) == {"agree+ unipc+dc/unipc 4"}     # at NFE 8 unipc is over budget: no pair
    assert figures.ratio_heatmap(df.replace({"solver": {"unipc+dc": "ddim"}}), tmp_path) == []   # no pair: nothing


def test_bad_format_or_metric_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="figure format 'jpg' not accepted; accepted: png, pdf, svg"):
        figures.heatmap(_grid(), tmp_path, fmt="jpg")
    with pytest.raises(ValueError, match="metric 'kid' not in results"):
        figures.family_panels(_grid(), tmp_path, metric="kid")
    assert not list(tmp_path.iterdir())

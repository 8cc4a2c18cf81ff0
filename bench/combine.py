"""Several runs in one table or plot: their results side by side, their protocol cards compared.

A comparison grows run by run (a new solver against last week's field), so `nfebench table` and `plot` take
several run directories. Their rows are concatenated; a cell that two runs computed identically (one cell_id)
is kept once; a solver whose cells two runs computed differently (another setup) keeps both, the later run's
named `solver (run)`, so no table cell averages two setups. The runs' protocol cards are compared
(bench/protocol.py): when they differ the combined card carries `not_comparable`, which every table and plot
drawn from it shows as a NOT COMPARABLE line.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .protocol import combine, read_card
from .store import CELL_COORDS, check_one_row_per_seed, load_results


def run_names(run_dirs) -> list[str]:
    """Each run's short name: its directory's name, or the path as given where two names clash."""
    names = [Path(d).name or str(d) for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def load_runs(run_dirs) -> tuple[pd.DataFrame, dict | None]:
    """(results, card) of one run or several (a `run` column names each row's run when several)."""
    dirs = list(dict.fromkeys(str(Path(d)) for d in run_dirs))   # a directory given twice counts once
    if len(dirs) == 1:
        return load_results(dirs[0]), read_card(dirs[0])
    names = run_names(dirs)
    frames = []
    for d, name in zip(dirs, names):
        df = load_results(d)
        frames.append(df.assign(run=name))
    df = pd.concat(frames, ignore_index=True)
    df = _separate_setups(_drop_repeats(df), names)
    check_one_row_per_seed(df)
    return df, combine({name: read_card(d) for d, name in zip(dirs, names)})


def _drop_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell that several runs computed with one identity (same coordinates and cell_id)."""
    if "cell_id" not in df.columns:
        return df
    same = df["cell_id"].notna() & df.duplicated(CELL_COORDS + ["cell_id"], keep="first")
    return df[~same].reset_index(drop=True)


def _separate_setups(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """A (model, solver) whose cells two runs computed differently: the later run's rows become
    'solver (run)', all of them (every NFE), so each line and row is one setup."""
    clash = df[df.duplicated(CELL_COORDS, keep=False)]
    rename = set()
    for _, part in clash.groupby(CELL_COORDS, sort=False):
        runs = sorted(set(part["run"]), key=order.index)
        rename |= {(r, part["model"].iloc[0], part["solver"].iloc[0]) for r in runs[1:]}
    if not rename:
        return df
    df = df.copy()
    hit = [(r, m, s) in rename for r, m, s in zip(df["run"], df["model"], df["solver"])]
    df.loc[hit, "solver"] = [f"{s} ({r})" for s, r in zip(df.loc[hit, "solver"], df.loc[hit, "run"])]
    return df

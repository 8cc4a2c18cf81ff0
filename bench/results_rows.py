"""What a results row means to every table, ratio and plot: metric names and directions, the budget rule,
titles, LaTeX escaping. The modules that draw tables (tables, ratios, nfe_changes, plots) import it; it imports
none of them."""
from __future__ import annotations

import pandas as pd

LOWER_IS_BETTER = {"fid": True, "kid": True, "traj_rmse": True, "cond_acc": False, "diverged_frac": True}
METRIC_NAMES = {"fid": "FID", "kid": "KID", "traj_rmse": "trajectory RMSE", "cond_acc": "conditional accuracy"}


def over_budget(df: pd.DataFrame) -> pd.Series:
    """Rows whose cell spent more NFE than its column's budget (an adaptive solver): never ranked in a fixed-NFE
    table, a ratio, an NFE change or a plot line."""
    return df["nfe_used"].notna() & (df["nfe_used"] > df["nfe"])


def within_budget(df: pd.DataFrame) -> pd.DataFrame:
    return df[~over_budget(df)] if "nfe_used" in df.columns else df


def title(model, guidance, metric):
    g = f", guidance {guidance:g}" if guidance != 1 else ", no guidance"
    return f"{METRIC_NAMES.get(metric, metric)} vs NFE — {model}{g}"


def tex_escape(s: str) -> str:
    return s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&") \
        .replace("#", "\\#")

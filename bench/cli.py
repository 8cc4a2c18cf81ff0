"""The `nfebench` command line: list, run, table, plot, report, train, calibrate."""
from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

from solvers.options import SpecError

from .results_rows import LOWER_IS_BETTER


class UsageError(Exception):
    pass


class RunStopped(Exception):
    """The grid stopped on a file system error (a full disk): one line, exit status 1, finished cells kept."""


# Flags that keep `nfebench run` (no spec) the quick suite: where and how it runs and what it writes besides
# its cells. Any other flag without a spec is a flag-only run from the neutral RunConfig defaults.
EXECUTION = ("executor", "workers", "devices", "shard_samples", "save_samples", "slurm_partition",
             "slurm_gpus_per_task", "slurm_time_min", "slurm_array_parallelism", "ray_address")
SUITE_SETTINGS = ("device", "batch_size", "out", "ratios", "fid_changes", "calibration", "memory_limit_gb") + EXECUTION
SPEC_FLAGS = ("models", "solvers", "nfe", "guidance", "seeds", "samples", "batch_size", "metrics", "device", "dtype",
              "model_dtype", "out", "inception_weights", "fid_stats", "ratios", "fid_changes", "below_min_nfe",
              "kid_subsets", "reference_rtol", "reference_samples", "calibration", "memory_limit_gb") + EXECUTION


def _neutral_defaults() -> str:
    """What a flag-only run starts from: the RunConfig defaults, in words (for --help)."""
    from dataclasses import MISSING, fields

    from .spec import RunConfig
    d = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(RunConfig)
         if f.name in ("models", "solvers", "nfe", "guidance", "seeds", "samples", "metrics", "reference_samples",
                       "kid_subsets", "below_min_nfe", "name")}
    j = lambda v: ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)  # noqa: E731
    return (f"models {j(d['models'])}, solvers {j(d['solvers'])}, NFE {j(d['nfe'])}, guidance {j(d['guidance'])}, "
            f"seeds {j(d['seeds'])}, {d['samples']} samples, metrics {j(d['metrics'])}, traj_rmse over "
            f"{'all samples' if not d['reference_samples'] else d['reference_samples']}, KID over {d['kid_subsets']} "
            f"subsets, below-min-nfe {d['below_min_nfe']}; such a run writes to --out, else to a new runs/{d['name']} "
            f"(runs/{d['name']}-2, -3, ... when that holds another run; the same command again resumes its own)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, no usage dump
        raise UsageError(message)


def _suite_path(name: str) -> Path:
    return Path(str(files("bench") / "suites" / f"{name}.toml"))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nfebench", description="Benchmark diffusion samplers at fixed NFE budgets.")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)

    ls = sub.add_parser("list", help="list registered solvers or models")
    ls.add_argument("what", nargs="?", choices=["solvers", "models"], default=None)
    ls.add_argument("--plugin", action="append", default=[], help="load solvers from a Python file")

    run = sub.add_parser("run", help="run a benchmark grid (default: the quick suite)", description=(
        "Run a benchmark grid. With no spec and no flags (or only " + ", ".join(
            "--" + k.replace("_", "-") for k in SUITE_SETTINGS) + ") it runs the quick suite into results/quick. "
        "Flags without a spec (--models, --solvers, --nfe, --plugin, ...) do not inherit the quick suite: they start "
        "from neutral defaults, " + _neutral_defaults() + ". A spec file's keys are the defaults its flags override."))
    run.add_argument("spec", nargs="?", help="a TOML spec file or a shipped suite name (quick, standard)")
    run.add_argument("--models")
    run.add_argument("--solvers")
    run.add_argument("--nfe")
    run.add_argument("--guidance")
    run.add_argument("--seeds")
    run.add_argument("--samples", type=int)
    run.add_argument("--batch-size", dest="batch_size", type=int)
    run.add_argument("--metrics")
    run.add_argument("--device")
    run.add_argument("--dtype", help="the solver's state and arithmetic: float32 (default) or float64")
    run.add_argument("--model-dtype", dest="model_dtype",
                     help="the network's dtype: float32, float64, bfloat16 or float16 (default: --dtype's)")
    run.add_argument("--out")
    run.add_argument("--plugin", action="append", default=None, help="load solvers from a Python file")
    run.add_argument("--inception-weights", dest="inception_weights")
    run.add_argument("--fid-stats", dest="fid_stats")
    run.add_argument("--ratios", help="MOD/BASE solver pairs for the paired ratio table ratios.md")
    run.add_argument("--fid-changes", dest="fid_changes", action="store_true", default=None,
                     help="write fid_changes.md: paired-bootstrap intervals of the FID change between NFEs")
    run.add_argument("--below-min-nfe", dest="below_min_nfe", choices=["error", "skip"])
    run.add_argument("--kid-subsets", dest="kid_subsets", type=int)
    run.add_argument("--reference-rtol", dest="reference_rtol", type=float)
    run.add_argument("--reference-samples", dest="reference_samples", type=int,
                     help="traj_rmse over the first N samples of a cell (0: all)")
    run.add_argument("--calibration", help="DC-Solver ratios file to read and extend (default RUN/calibration.json)")
    run.add_argument("--memory-limit-gb", dest="memory_limit_gb", type=float,
                     help="refuse cells estimated to need more memory (default: half the machine's; 0: no check)")
    run.add_argument("--replace", action="store_true",
                     help="move cells of the run directory made with another setup to RUN/replaced/ and compute "
                          "this spec's (without it such a rerun is refused)")
    ex = run.add_argument_group("where shards run (none of these changes a number)")
    ex.add_argument("--executor", help="local (default, in process), pool (processes), submitit (SLURM, or its "
                                       "local executor without srun), ray")
    ex.add_argument("--workers", type=int, help="processes of the pool (implies --executor pool), or tasks in "
                                                "flight for submitit/ray")
    ex.add_argument("--devices", help="one pool worker per device: cuda:0,cuda:1,...")
    ex.add_argument("--shard-samples", dest="shard_samples", type=int,
                    help="samples per shard (a multiple of --batch-size; default 8 batches)")
    ex.add_argument("--save-samples", dest="save_samples", action="store_true", default=None,
                    help="write every sample of a cell to RUN/samples/<cell>.npz")
    ex.add_argument("--slurm-partition", dest="slurm_partition")
    ex.add_argument("--slurm-gpus-per-task", dest="slurm_gpus_per_task", type=int)
    ex.add_argument("--slurm-time-min", dest="slurm_time_min", type=int)
    ex.add_argument("--slurm-array-parallelism", dest="slurm_array_parallelism", type=int)
    ex.add_argument("--ray-address", dest="ray_address", help="a Ray cluster to join (default: a local Ray)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--no-plots", action="store_true")
    run.add_argument("--no-report", action="store_true", help="do not write RUN/report.html")

    tb = sub.add_parser("table", help="print the tables of a run (or of several runs combined)")
    tb.add_argument("run", nargs="+", help="run directories; several are combined, flagged NOT COMPARABLE when "
                                           "their protocol cards differ")
    tb.add_argument("--metric", default="fid", choices=list(LOWER_IS_BETTER))   # every registered metric
    tb.add_argument("--format", default="md", choices=["md", "csv", "latex"])
    tb.add_argument("--ratio", action="append", default=None, metavar="MOD/BASE",
                    help="paired ratio table metric(MOD) / metric(BASE), seed by seed (repeatable)")
    tb.add_argument("--changes", action="store_true",
                    help="FID change between consecutive NFEs with paired-bootstrap 95%% intervals (md or csv)")

    pl = sub.add_parser("plot", help="draw the plots of a run (or of several runs combined)")
    pl.add_argument("run", nargs="+", help="run directories; several are combined (metric plots only, into --out)")
    pl.add_argument("--solvers", help="draw only these solvers (comma-separated, as in the run)")
    pl.add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    pl.add_argument("--label", action="append", default=None, metavar="MODEL=SHORT",
                    help="a model's short name in titles and file names (repeatable; e.g. hf:/data/x=cifar10)")
    pl.add_argument("--baseline", metavar="SOLVER",
                    help="bands show each solver's paired difference (or ratio) to this solver, seed by seed")
    pl.add_argument("--band", choices=["ci", "diff", "ratio"], default=None,
                    help="ci: 95%% interval over seeds (default); diff, ratio: paired with --baseline (default diff)")
    pl.add_argument("--out", help="folder for the figures (default: the run; needed for several runs)")

    rp = sub.add_parser("report", help="write RUN/report.html: the run on one self-contained page (opens offline)")
    rp.add_argument("run")
    rp.add_argument("--no-figures", action="store_true",
                    help="do not draw the leaders, heatmap and family figures first (the report shows what is there)")

    cal = sub.add_parser("calibrate", help="search DC-Solver compensation ratios (unipc+dc, dpmpp-2m+dc) into a file")
    cal.add_argument("spec", nargs="?", help="a TOML spec file or a shipped suite name: its DC solvers are calibrated")
    for flag in ("models", "solvers", "nfe", "guidance", "device", "dtype"):
        cal.add_argument(f"--{flag}")
    cal.add_argument("--reference-rtol", dest="reference_rtol", type=float)
    cal.add_argument("--plugin", action="append", default=None, help="load solvers from a Python file")
    cal.add_argument("--out", dest="calibration", default="calibration.json",
                     help="ratios file, read and extended (default calibration.json; `nfebench run --calibration` reads it)")

    tr = sub.add_parser("train", help="train an embedded model from scratch")
    tr.add_argument("name")
    tr.add_argument("--out", default=None, help="directory for the weights (default: the package's weights/)")
    tr.add_argument("--seed", type=int, default=0)
    return p


def resolve_spec(args):
    """The spec of `run`/`calibrate`: a spec file or suite with flags over it; no spec and no grid flags: the quick
    suite (results/quick); grid flags without a spec: the neutral RunConfig defaults, `out` left empty (cmd_run
    picks a new runs/ directory)."""
    from .spec import RunConfig
    flags = {k: getattr(args, k, None) for k in SPEC_FLAGS}
    plugins = list(getattr(args, "plugin", None) or [])
    if args.spec is None and (plugins or any(v is not None for k, v in flags.items() if k not in SUITE_SETTINGS)):
        spec = RunConfig()
    elif args.spec is None:
        spec = RunConfig.from_toml(_suite_path("quick"))
        spec.out = spec.out if spec.out else "results/quick"
    elif Path(args.spec).suffix == ".toml" or Path(args.spec).exists():
        spec = RunConfig.from_toml(args.spec)
    elif _suite_path(args.spec).is_file():
        spec = RunConfig.from_toml(_suite_path(args.spec))
    else:
        raise SpecError(f"spec '{args.spec}' is neither a TOML file nor a shipped suite (quick, standard)")
    if plugins:
        flags["plugins"] = _unique_files(list(spec.plugins) + plugins)   # a file given twice loads once
    spec.update(flags)
    return spec


def _unique_files(paths: list[str]) -> list[str]:
    seen, out = set(), []
    for p in paths:
        try:
            key = str(Path(p).resolve())
        except (OSError, ValueError):
            key = p
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _fresh_run_dir(spec) -> str:
    """A flag-only run's directory: runs/<name>, else runs/<name>-2, -3, ...: the first that does not exist yet
    or that holds this very spec (so the same command again resumes it). Never results/."""
    import itertools
    import json

    def comparable(d: dict) -> dict:
        d = json.loads(json.dumps(d, default=str))
        return {k: v for k, v in d.items() if k not in ("out", "memory_limit_gb") + EXECUTION}

    want = comparable(spec.to_dict())
    for i in itertools.count(1):
        d = Path("runs") / (spec.name if i == 1 else f"{spec.name}-{i}")
        if not d.exists():
            return str(d)
        try:
            if comparable(json.loads((d / "run.json").read_text())["spec"]) == want:
                return str(d)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue


def cmd_run(args) -> int:
    from .plots import plot_run
    from .runner import Runner, plan
    from .spec import check_output_dir, check_output_file
    from .tables import write_tables

    spec = resolve_spec(args)
    fresh = not spec.out
    if fresh:
        spec.out = _fresh_run_dir(spec)
    check_output_dir(spec.out, "--out" if args.out else "run directory")      # before any work
    if spec.calibration:
        check_output_file(spec.calibration, "calibration file")
    cells, notes = plan(spec)
    if not cells:
        raise SpecError("nothing to run: the spec plans 0 cells" + (f" ({'; '.join(notes[:3])}"
                        + ("; ..." if len(notes) > 3 else "") + ")" if notes else ""))
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from functools import partial

        from tqdm import tqdm
        progress = partial(tqdm, unit="cell", dynamic_ncols=True)
    log = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if fresh:
        log(f"note: no spec file: neutral defaults (see nfebench run --help), run directory {spec.out} "
            "(--out to choose)")
    runner = Runner(spec, spec.out, progress=progress, log=log, replace=args.replace)
    try:
        summary = runner.run()
        df = summary["results"]
        if len(df):
            write_tables(df, spec.out, spec.ratios, log=log, fid_changes=spec.fid_changes)
            if not args.no_plots:
                plot_run(spec.out)
            if not args.no_report:
                from .report import draw_figures, write_report
                if not args.no_plots:
                    draw_figures(spec.out)
                report = write_report(spec.out)
    except OSError as e:   # a full disk, a file system gone read-only: stop the grid, keep the finished cells
        try:
            kept = len(list((Path(spec.out) / "cells").glob("*.json")))
        except OSError:
            kept = "?"
        where = e.filename or spec.out
        raise RunStopped(f"cannot write {where}: {e.strerror or e}; the run stopped, its {kept} finished cell(s) "
                         f"in {spec.out} are kept: free space (or fix the file system) and rerun the same command "
                         "to resume") from None
    if not args.quiet:
        from .protocol import read_card
        from .tables import to_markdown
        if len(df):
            print(to_markdown(df, "fid", card=read_card(spec.out)))
            extra = "".join(f", {name}" for name, on in (("ratios.md", spec.ratios),
                                                          ("fid_changes.md", spec.fid_changes))
                            if on and (Path(spec.out) / name).is_file())
            plots = "" if args.no_plots else " and plots"
            print(f"wrote {spec.out}/results.csv, fid_vs_nfe.md, fid_vs_nfe.tex{extra}{plots}", file=sys.stderr)
            if not args.no_report:
                print(f"open {report} in a browser: the whole run on one page", file=sys.stderr)
            if not spec.fid_changes and (Path(spec.out) / "features").is_dir():
                print(f"is a change between two NFEs real? nfebench table {spec.out} --changes", file=sys.stderr)
    if summary["failed"]:
        n = len(summary["failed"])
        if not len(df):
            print(f"nfebench: all {n} cell(s) failed, so no tables or plots were written; rerun the same command "
                  "to retry them", file=sys.stderr)
        else:
            print(f"nfebench: {n} cell(s) failed; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def cmd_list(args) -> int:
    from models import list_models
    from solvers import list_solvers
    from .plugins import load_plugin_file
    for p in args.plugin:
        load_plugin_file(p)
    solvers, models = list_solvers(), {**list_models(),
                                       "hf:<repo|dir>": "a diffusers UNet2DModel checkpoint (needs the 'hub' extra)"}
    width = max(map(len, [*solvers, *models]))
    for what, entries in (("solvers", solvers), ("models", models)):
        if args.what in (None, what):
            print(f"{what}:")
            for name, summary in entries.items():
                print(f"  {name:<{width}} {summary}")
    return 0


def cmd_table(args) -> int:
    from .combine import load_runs
    from .protocol import card_lines, flag
    from .tables import render
    runs = args.run
    df, card = load_runs(runs)
    where = " ".join(runs)
    asked = args.metric in ((card or {}).get("metrics") or [])
    if args.metric not in df.columns or (df[args.metric].isna().all() and not asked):
        raise SpecError(f"run {where} has no values for metric '{args.metric}'")
    if flag(card):
        print(f"nfebench: warning: {flag(card)}", file=sys.stderr)
    if args.changes:
        from . import nfe_changes
        if args.ratio or args.metric != "fid" or args.format == "latex":
            raise SpecError("--changes prints the FID change between NFEs as md or csv; "
                            "it takes no --ratio, --metric or --format latex")
        if len(runs) > 1:
            raise SpecError("--changes reads one run's saved features; give one run directory")
        try:
            print(nfe_changes.render(df, runs[0], args.format), end="")
        except (nfe_changes.NoFeatures, ValueError) as e:
            raise SpecError(str(e)) from None
    elif args.ratio:
        from . import ratios
        if ratios.paired_ratios(df, args.ratio, args.metric).empty:
            raise SpecError(f"no paired cells for {', '.join(args.ratio)}: "
                            f"{ratios.no_pairs_reason(df, args.ratio, args.metric)}")
        print(ratios.render(df, args.ratio, args.metric, args.format), end="")
    else:
        print(render(df, args.metric, args.format, card=card), end="")
        if args.format == "csv" and card:   # the card beside the CSV, which must stay plain
            print("\n".join(f"protocol: {line}" for line in card_lines(card)), file=sys.stderr)
    return 0


def cmd_plot(args) -> int:
    from .combine import load_runs
    from .plots import parse_labels, plot_runs, select_solvers
    from .protocol import flag
    from .spec import split_specs
    runs = args.run
    if len(set(runs)) > 1 and not args.out:
        raise SpecError("plotting several runs writes their combined figures to --out DIR; give one")
    if args.band in ("diff", "ratio") and not args.baseline:
        raise SpecError(f"--band {args.band} pairs each solver with a baseline: give --baseline SOLVER")
    if args.baseline and args.band == "ci":
        raise SpecError("--baseline draws paired bands: --band diff or ratio (or no --band: diff)")
    df, card = load_runs(runs)   # everything named is checked against the results before any drawing
    solvers = split_specs(args.solvers) if args.solvers else None
    select_solvers(df, solvers)
    baseline = select_solvers(df, [args.baseline])["solver"].iloc[0] if args.baseline else None
    labels = parse_labels(args.label, list(dict.fromkeys(df["model"])))
    if flag(card):
        print(f"nfebench: warning: {flag(card)}", file=sys.stderr)
    if args.out:
        from .spec import check_output_dir
        check_output_dir(args.out, "--out")
    band = args.band or ("diff" if baseline else "ci")
    for p in plot_runs(runs, args.out, solvers=solvers, fmt=args.format, labels=labels, baseline=baseline,
                       band=band):
        print(p)
    return 0


def cmd_train(args) -> int:
    try:
        from models.training import TRAINERS
    except ImportError:
        TRAINERS = {}
    if args.name not in TRAINERS:
        raise SpecError(f"nothing to train named '{args.name}'; accepted: {', '.join(TRAINERS) or 'none'}")
    out = Path(args.out) if args.out else None
    path = TRAINERS[args.name](out, seed=args.seed) if out else TRAINERS[args.name](None, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_calibrate(args) -> int:
    """Search the ratios of every DC solver of the spec at each (model, NFE, guidance) missing from the file."""
    from solvers import get_solver, list_solvers

    from .calibration import calibration_key
    from .runner import Runner, plan
    from .spec import check_output_file

    spec = resolve_spec(args)
    check_output_file(spec.calibration, "calibration file")

    dc = [s for s in spec.solvers if get_solver(s).needs_calibration]
    if not dc:
        takers = ", ".join(n for n in list_solvers() if get_solver(n).needs_calibration)
        raise SpecError(f"no solver to calibrate in {', '.join(spec.solvers)}; calibrated solvers: {takers} "
                        "(with any of their options except a constant ratio=)")
    cpr = [s for s in dc if get_solver(s).ratios == "cpr"]
    if cpr:
        raise SpecError(f"{cpr[0]} predicts its ratios from searched ones: calibrate "
                        f"{get_solver(cpr[0]).calibration_spec} instead")
    spec.solvers = dc
    runner = Runner(spec, spec.out, log=lambda msg: print(msg, file=sys.stderr))
    cells, notes = plan(spec)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    seen = set()
    print("| model | solver | NFE | guidance | ratios | search NFE | final MSE, ratios 1 -> calibrated |")
    print("|---|---|---:|---:|---|---:|---|")
    for c in cells:
        if (c.model, c.solver, c.nfe, c.guidance) in seen:
            continue
        seen.add((c.model, c.solver, c.nfe, c.guidance))
        model, solver = runner.model(c.model), get_solver(c.solver)
        runner.calibrated_ratios(c, model, solver, solver.plan(model.schedule, c.nfe))
        e = runner.calibration.get(calibration_key(c.model, solver.calibration_spec, c.nfe, c.guidance, spec.dtype))
        print(f"| {c.model} | {c.solver} | {c.nfe} | {c.guidance:g} | {', '.join(f'{r:.3f}' for r in e['ratios'])} "
              f"| {e['search_nfe']} | {e['final_mse_ratio_1']:.3g} -> {e['final_mse_calibrated']:.3g} |")
    print(f"wrote {runner.calibration.path}; use it with: nfebench run ... --calibration {runner.calibration.path}",
          file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .report import draw_figures, write_report
    run = Path(args.run)
    if not (run / "cells").is_dir() and not (run / "results.csv").is_file():
        raise SpecError(f"no run at {args.run}: a run directory holds cells/ or results.csv (nfebench run writes it)")
    if not args.no_figures:
        note = draw_figures(run)
        if note:
            print(f"nfebench: note: {note}", file=sys.stderr)
    print(write_report(run))
    return 0


COMMANDS = {"run": cmd_run, "list": cmd_list, "table": cmd_table, "plot": cmd_plot, "train": cmd_train,
            "calibrate": cmd_calibrate, "report": cmd_report}


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.cmd is None:
            parser.print_help()
            return 2
        from .plugins import load_installed_plugins
        load_installed_plugins()   # installed packages' solvers, before any spec is resolved
        return COMMANDS[args.cmd](args)
    except (UsageError, SpecError, OSError, RunStopped) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"nfebench: error: {msg}", file=sys.stderr)
        return 1 if isinstance(e, RunStopped) else 2
    except KeyboardInterrupt:
        print("nfebench: interrupted; finished cells are saved, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

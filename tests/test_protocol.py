"""The protocol card: its fields for a real run, in run.json and in every table's caption; runs combined in one
table or plot are flagged NOT COMPARABLE exactly when their cards differ in protocol."""
import json
import re
from importlib.metadata import version
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import torch

from bench import protocol
from bench.cli import main
from bench.combine import load_runs
from bench.protocol import card_lines, caption, combine, differences, flag, protocol_card, provenance_differences
from bench.spec import RunConfig

GRID = ["--models", "gmm2d", "--nfe", "4,5", "--seeds", "0,1", "--metrics", "fid,kid", "-q", "--no-plots"]
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "sha256.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """a: ddim and ode-rk4 on 40 samples; b: ddim on 30 samples (another protocol); c: dpmpp-2m on 40 (the same
    protocol as a)."""
    base = tmp_path_factory.mktemp("runs")
    assert main(["run", *GRID, "--solvers", "ddim,ode-rk4", "--samples", "40", "--out", str(base / "a")]) == 0
    assert main(["run", *GRID, "--solvers", "ddim", "--samples", "30", "--out", str(base / "b")]) == 0
    assert main(["run", *GRID, "--solvers", "dpmpp-2m", "--samples", "40", "--out", str(base / "c")]) == 0
    return base


def test_card_in_run_json_has_the_protocol(runs):
    card = json.loads((runs / "a" / "run.json").read_text())["protocol"]
    m = card["models"]["gmm2d"]
    assert m["weights_sha256"] is None and m["conditional"] is False          # an exact model
    assert m["feature_extractor"] == "data" and m["feature_extractor_sha256"] == "data" and m["feature_dim"] == 2
    assert m["reference"]["kind"] == "exact" and re.fullmatch("[0-9a-f]{64}", m["reference"]["sha256"])
    assert m["options"] == {"prediction": "x0", "schedule": "vp-discrete"}
    ddim, rk4 = card["solvers"]["ddim"], card["solvers"]["ode-rk4"]
    assert ddim["grid"] == "time_uniform" and ddim["options"] == {"eta": 0.0, "grid": "time_uniform", "rho": 7.0}
    assert rk4["grid"] == "logSNR"
    assert card["samples"] == 40 and card["seeds"] == [0, 1] and card["nfe"] == [4, 5]
    assert card["dtype"] == card["model_dtype"] == "float32"
    assert card["metric_settings"] == {"kid_subsets": 100}
    assert "guided evaluation" in card["nfe_convention"] and "1 NFE" in card["nfe_convention"]
    assert card["versions"]["torch"] == version("torch") and torch.__version__.startswith(card["versions"]["torch"])
    assert card["git_commit"] == protocol.git_commit() and card["device"].startswith("cpu")
    assert card == protocol.read_card(runs / "a")


def test_digits_card_names_the_weights_files():
    """The digits model's and its classifier's sha256 are the shipped files' (models/weights/sha256.json)."""
    shipped = json.loads(WEIGHTS.read_text())
    card = protocol_card(RunConfig(models=["digits"], solvers=["dpmpp-2m"], samples=100, metrics=["fid", "cond_acc"]))
    m = card["models"]["digits"]
    assert m["weights_sha256"] == shipped["digits.safetensors"]
    assert m["feature_extractor"] == "digits-classifier"
    assert m["feature_extractor_sha256"] == shipped["digits-classifier.safetensors"] and m["feature_dim"] == 128
    assert m["reference"]["kind"] == "data set" and m["conditional"] is True
    # 100 samples in 128-d features: the run warns and the tables footnote it
    warn = protocol.fid_dimension_warnings(card)
    assert len(warn) == 1 and "over 100 samples in 128-dimensional" in warn[0]
    assert protocol.fid_dimension_warnings({**card, "samples": 128}) == []


def test_fid_stats_file_is_the_reference(tmp_path):
    """A --fid-stats file is the reference of an Inception-scored model: its sha256 is in the card, and KID's
    absence is explained."""
    import numpy as np

    from bench.identity import file_sha256
    stats = tmp_path / "s.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))

    class Hub:   # what protocol.reference_card reads of an Inception-scored model
        feature_extractor, fid_reference = "inception-v3-compat", None
    ref = protocol.reference_card(RunConfig(fid_stats=str(stats)), Hub())
    assert ref == {"kind": "statistics file", "what": str(stats), "sha256": file_sha256(stats)}
    card = {"models": {"hf:x": {"reference": ref}}}
    assert "--fid-stats" in protocol.why_missing(card, "hf:x", "kid")
    assert protocol.why_missing(card, "hf:x", "fid") is None


def test_tables_carry_the_card_as_caption(runs):
    md = (runs / "a" / "fid_vs_nfe.md").read_text()
    caps = [l for l in md.splitlines() if l.startswith("_Protocol: ")]
    assert len(caps) == md.count("### FID vs NFE")
    assert "40 samples per cell, seeds 0, 1, float32" in caps[0] and "gmm2d (exact, no weights)" in caps[0]
    assert "logSNR: ode-rk4; time_uniform: ddim" in caps[0] and "a guided evaluation counts 1 NFE" in caps[0]
    tex = (runs / "a" / "fid_vs_nfe.tex").read_text()
    cap = next(l for l in tex.splitlines() if l.startswith("% \\caption{"))
    assert "Protocol: gmm2d" in cap and "40 samples per cell" in cap and "time\\_uniform: ddim" in cap
    assert cap.endswith("}")


def test_table_command_prints_the_caption(runs, capsys):
    assert main(["table", str(runs / "a")]) == 0
    out, err = capsys.readouterr()
    assert "_Protocol: gmm2d" in out and "NOT COMPARABLE" not in out + err
    assert main(["table", str(runs / "a"), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "Protocol" not in out and "protocol: samples per cell: 40" in err   # the CSV stays plain


def test_different_sample_counts_are_flagged_not_comparable(runs, capsys):
    assert main(["table", str(runs / "a"), str(runs / "b")]) == 0
    out, err = capsys.readouterr()
    flag_line = "NOT COMPARABLE: runs a, b differ in samples: 40 (a) vs 30 (b)"
    assert f"**{flag_line}**" in out and flag_line in err
    rows = {l.split("|")[1].strip() for l in out.splitlines() if l.startswith("| ") and "NFE" not in l}
    assert rows == {"ddim", "ode-rk4", "ddim (b)"}   # b's ddim is another setup: its own row, never averaged in
    assert main(["table", str(runs / "a"), str(runs / "b"), "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert "\\textbf{NOT COMPARABLE: runs a, b differ in samples: 40 (a) vs 30 (b)}" in tex


def test_same_protocol_is_not_flagged(runs, capsys):
    df, card = load_runs([runs / "a", runs / "c"])
    assert flag(card) is None and card["runs"] == ["a", "c"]
    assert sorted(df["solver"].unique()) == ["ddim", "dpmpp-2m", "ode-rk4"] and set(df["run"]) == {"a", "c"}
    assert main(["table", str(runs / "a"), str(runs / "c")]) == 0
    out, err = capsys.readouterr()
    assert "NOT COMPARABLE" not in out + err and "| dpmpp-2m |" in out and "| ddim |" in out
    # a run given twice is one run; a cell two runs computed alike (one cell_id) is kept once
    df2, _ = load_runs([runs / "a", runs / "a"])
    assert len(df2) == len(pd.read_csv(runs / "a" / "results.csv"))


def test_combined_plot_is_flagged(runs, tmp_path, capsys):
    out = tmp_path / "fig"
    with matplotlib.rc_context({"svg.fonttype": "none"}):   # text as text, to read it back
        assert main(["plot", str(runs / "a"), str(runs / "b"), "--out", str(out), "--format", "svg"]) == 0
    printed, err = capsys.readouterr()
    svg = (out / "fid_gmm2d_g1.svg").read_text()
    assert "NOT COMPARABLE: runs a, b differ in samples" in svg and "NOT COMPARABLE" in err
    assert str(out / "fid_gmm2d_g1.svg") in printed
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        assert main(["plot", str(runs / "a"), str(runs / "c"), "--out", str(out), "--format", "svg"]) == 0
    assert "NOT COMPARABLE" not in (out / "fid_gmm2d_g1.svg").read_text()
    assert main(["plot", str(runs / "a"), str(runs / "b")]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_differences_ignore_coordinates_and_provenance():
    card = protocol_card(RunConfig(models=["gmm2d"], solvers=["ddim"], samples=10))
    other = json.loads(json.dumps(card))
    other.update(nfe=[7], guidance=[2.0], git_commit="0" * 40, device="elsewhere")   # not the protocol
    other["solvers"]["heun"] = {"grid": "karras", "options": {}}                        # a solver only b has
    assert differences({"a": card, "b": other}) == []
    assert provenance_differences({"a": card, "b": other})[0].startswith("device: ")
    c = combine({"a": card, "b": other})
    assert flag(c) is None and any(l.startswith("provenance differs") for l in card_lines(c))
    other["solvers"]["ddim"]["options"]["eta"] = 0.5                                     # a shared solver differs
    other["dtype"] = "float64"
    assert differences({"a": card, "b": other}) == ["dtype: float32 (a) vs float64 (b)",
                                                    "solvers.ddim.options.eta: 0.0 (a) vs 0.5 (b)"]


def test_card_lines_and_caption_read_the_card():
    card = protocol_card(RunConfig(models=["gmm2d"], solvers=["ddim", "heun"], seeds=[0, 1, 2], samples=64))
    lines = card_lines(card)
    assert lines[0] == "models: gmm2d (exact, no weights)"
    assert "samples per cell: 64; seeds: 0-2; dtype: float32" in lines
    assert "grids: karras: heun; time_uniform: ddim" in lines
    assert any(l.startswith("solver heun: churn=0.0, grid=karras") for l in lines)
    assert caption(card, models=["gmm2d"], solvers=["heun"]).count("grids karras: heun;") == 1
    assert "time\\_uniform" in caption(card, "latex") and caption(None) == "" and card_lines(None)[0].startswith(
        "protocol: unknown")


def test_a_malformed_card_is_not_trusted(tmp_path):
    """run.json is read back untrusted: a protocol of the wrong shape falls back to the spec's partial card."""
    (tmp_path / "run.json").write_text(json.dumps({"protocol": {"models": ["x"]}, "spec": {"solvers": ["ddim"],
                                                                                           "samples": 7}}))
    card = protocol.read_card(tmp_path)
    assert card["card_version"] == 0 and card["samples"] == 7 and card["solvers"]["ddim"]["grid"] == "time_uniform"
    (tmp_path / "run.json").write_text("[1, 2")
    assert protocol.read_card(tmp_path) is None

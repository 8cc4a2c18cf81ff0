"""No number changes (issue 17): every solver's samples are bit-identical to the committed sha256s.

tests/data/sample_hashes.json is written by tests/data/make_sample_hashes.py; these tests recompute its entries
with that script's own functions. The full check is slow (about a minute on one core): the default run checks a
deterministic subset (every 5th entry, plus every spec at its smallest NFE on each of its models).
Regenerate the file only for an intended change of numbers, never to make this test pass.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_sample_hashes", DATA / "make_sample_hashes.py")
msh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(msh)

RECORD = json.loads(msh.OUT.read_text())
ENTRIES = RECORD["entries"]
CASE_KEYS = ("spec", "model", "nfe", "guidance", "dtype")


def _key(e):
    return tuple(e[k] for k in CASE_KEYS)


@pytest.fixture
def one_thread():
    """Thread count changes float summation order: the hashes were recorded on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fast_subset(entries):
    """Every 5th entry, plus each (spec, model)'s entry at its smallest NFE (float32, guidance 1: the cheapest;
    guidance 4 is among the every-5th entries)."""
    first = {}
    for i, e in enumerate(entries):
        k = (e["spec"], e["model"])
        rank = (e["nfe"], e["dtype"] != "float32", e["guidance"])
        if k not in first or rank < first[k][0]:
            first[k] = (rank, i)
    first = {k: i for k, (_, i) in first.items()}
    keep = set(range(0, len(entries), 5)) | set(first.values())
    return [entries[i] for i in sorted(keep)]


def check(entries):
    bad = []
    for e in entries:
        case = {k: e[k] for k in CASE_KEYS}
        try:
            got = msh.compute(case)
        except Exception as exc:   # a spec that no longer runs is a change too
            bad.append(f"{msh.case_name(case)}: raised {type(exc).__name__}: {exc}")
            continue
        if got["sha256"] != e["sha256"] or got["nfe_used"] != e["nfe_used"]:
            what = []
            if got["nfe_used"] != e["nfe_used"]:
                what.append(f"nfe_used {got['nfe_used']} != recorded {e['nfe_used']}")
            if got["sha256"] != e["sha256"]:
                what.append(f"sha256 {got['sha256'][:16]}... != recorded {e['sha256'][:16]}...")
            bad.append(f"{msh.case_name(case)}: {'; '.join(what)}")
    if bad:
        meta = RECORD["meta"]
        pytest.fail(f"{len(bad)} of {len(entries)} entries changed (recorded with torch {meta['torch']} on "
                    f"{meta['system']} {meta['machine']}; now torch {torch.__version__}):\n  "
                    + "\n  ".join(bad[:40]) + ("\n  ..." if len(bad) > 40 else ""), pytrace=False)


def test_record_matches_script():
    """The committed file holds exactly the cases the script lists (SPECS, NFE, models, guidance, dtypes)."""
    assert RECORD["specs"] == msh.SPECS, "SPECS changed since sample_hashes.json was written"
    recorded = [_key(e) for e in ENTRIES]
    assert len(set(recorded)) == len(recorded), "duplicate entries in sample_hashes.json"
    assert recorded == [_key(c) for c in msh.cases()], "the script's cases differ from sample_hashes.json's"
    covered = {msh.make_solver(s).name for s in msh.SPECS}
    assert covered >= set(msh.builtin_solvers()), \
        f"registered solvers without a recorded spec: {sorted(set(msh.builtin_solvers()) - covered)}"


def test_bit_identical_subset(one_thread):
    sub = fast_subset(ENTRIES)
    assert {e["spec"] for e in sub} == set(msh.SPECS)
    check(sub)


@pytest.mark.slow
def test_bit_identical_all(one_thread):
    check(ENTRIES)

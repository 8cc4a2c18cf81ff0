"""`nfebench report RUN` (bench/report.py): one self-contained page, its sections in order, every text escaped,
the results table equal to the run's seed summary, each missing piece a labelled absence, images within the size
budget. The run directories here are tiny and hand-made (dummy PNGs, a fake leaders frame, a card dict)."""
import base64
import io
import json
import math
import sys
import types
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import report
from bench.cli import main
from bench.markdown_html import to_html
from bench.store import COLUMNS
from bench.tables import _fmt, summarize

EVIL_MODEL = "<script>alert('m')</script>"
EVIL_SOLVER = "s&<b>x</b>"
FIGURES = {"leaders": "leaders_fid_m_g1.png", "heatmaps": "heatmap_fid_m.png", "families": "family_fid_m.png",
           "samples": "samples_m_g1.png", "changes": "ratio_fid_m.png", "plots": "fid_m_g1.png"}


def _png(path, size=(40, 30), color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path)


def results_frame() -> pd.DataFrame:
    """Two models, two guidance scales on one, three solvers, NFE 4 and 10, three seeds; one seed's FID NaN; an
    adaptive cell that used 5-7 NFE. FID means run 9.72 to 14.9 (a plain text sort puts 10.3 before 9.72) and KID
    means -0.474 to 0.55 (a text sort comparing digit runs as numbers puts 0.05 before 0.026)."""
    rows = []
    for model, guidance in (("gmm2d", 1.0), (EVIL_MODEL, 1.0), (EVIL_MODEL, 4.0)):
        for j, solver in enumerate(("ddim", "dpmpp-2m", EVIL_SOLVER)):
            for nfe in (4, 10):
                for seed in range(3):
                    fid = 9.5 + 0.7 * j + (nfe == 4) * 3.1 + 0.05 * seed + 0.2 * guidance
                    if (solver, nfe, seed) == ("ddim", 10, 2):
                        fid = math.nan
                    used = 5 + seed if solver == EVIL_SOLVER and nfe == 4 else nfe
                    rows.append({"model": model, "solver": solver, "nfe": nfe, "nfe_used": used,
                                 "guidance": guidance, "seed": seed, "n_samples": 8, "fid": fid,
                                 "kid": (j - 1) * 0.5 + 0.01 * seed + 0.004 * nfe, "traj_rmse": math.nan,
                                 "cond_acc": math.nan,
                                 "diverged_frac": 0.0, "wall_s": 0.1, "samples_per_s": 80.0})
    return pd.DataFrame(rows, columns=COLUMNS)


def make_run(root, figures=True, meta=True, markdown=True, card=None):
    """A run directory: results.csv, run.json (with `card` as its protocol), dummy PNGs, fid_changes.md,
    ratios.md."""
    root.mkdir(parents=True, exist_ok=True)
    results_frame().to_csv(root / "results.csv", index=False)
    if meta:
        m = {"spec": {"name": "tiny", "models": ["gmm2d", EVIL_MODEL], "solvers": ["ddim"], "nfe": [4, 10],
                      "seeds": [0, 1, 2], "samples": 8, "metrics": ["fid", "kid"]},
             "versions": {"torch": "2.x"}, "git_commit": "abc123", "device": "cpu"}
        if card is not None:
            m["protocol"] = card
        (root / "run.json").write_text(json.dumps(m))
    if figures:
        for i, name in enumerate(FIGURES.values()):
            _png(root / name, size=(40 + i, 30), color=(20 * i, 100, 200 - 20 * i))
    if markdown:
        (root / "fid_changes.md").write_text("# FID change\n\n### digits\n\nA **bold** note.\n\n| solver | 4 → 10 |\n"
                                             "|---|---:|\n| ddim | **-1.2** [-1.5, -0.9] |\n")
        (root / "ratios.md").write_text("# Paired ratios\n\n| pair | NFE 4 |\n|---|---:|\n| `a<b` / `c` | 0.9+ |\n")
    return root


class _Page(HTMLParser):
    """Sections in order, every tag with its attributes and section, the results table's header and rows."""

    def __init__(self):
        super().__init__()
        self.sections, self.tags, self.rows, self.head = [], [], [], []
        self._table = self._thead = False
        self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        self.tags.append((tag, a, self.sections[-1] if self.sections else None))
        if tag == "table":
            self._table = a.get("id") == "results-table"
        self._thead = self._thead or (self._table and tag == "thead")
        if self._table and tag == "tr":
            self._row = []
        if self._table and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if self._table and tag in ("td", "th"):
            self._row.append(self._cell)
            self._cell = None
        elif self._table and tag == "tr":
            (self.head.extend if self._thead else self.rows.append)(self._row)
        elif tag == "thead":
            self._thead = False
        elif tag == "table":
            self._table = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parse(html_text) -> _Page:
    p = _Page()
    p.feed(html_text)
    return p


@pytest.fixture
def no_leaders(monkeypatch):
    monkeypatch.setitem(sys.modules, "bench.leaders", None)   # import fails: as before bench/leaders.py


def test_the_page_is_self_contained(tmp_path, no_leaders):
    page = report.write_report(make_run(tmp_path / "run")).read_text()
    p = parse(page)
    imgs = [a for tag, a, _ in p.tags if tag == "img"]
    assert len(imgs) == len(FIGURES)
    for tag, a, _ in p.tags:
        for k in ("src", "href"):
            assert not str(a.get(k, "")).lower().startswith(("http:", "https:", "//")), (tag, a)
        assert not (tag == "script" and "src" in a) and not (tag == "link" and a.get("rel") == "stylesheet")
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(a["src"].split(",", 1)[1])))
        im.load()
        assert im.size == Image.open(tmp_path / "run" / a["alt"]).size   # small images are inlined at full size
    assert "http://" not in page and "https://" not in page
    assert page.isascii()    # "±" and the like as character references: the same bytes under any locale
    csp = [a for tag, a, _ in p.tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_sections_come_in_order_with_their_figures(tmp_path, no_leaders):
    p = parse(report.write_report(make_run(tmp_path / "run")).read_text())
    assert p.sections == list(report.SECTION_ORDER)
    where = {a["alt"]: section for tag, a, section in p.tags if tag == "img"}
    assert where == {name: section for section, name in FIGURES.items()}


def test_user_text_is_escaped(tmp_path, no_leaders):
    page = report.write_report(make_run(tmp_path / "run")).read_text()
    assert EVIL_MODEL not in page and EVIL_SOLVER not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(&#x27;m&#x27;)&lt;/script&gt;" in page and "s&amp;&lt;b&gt;x&lt;/b&gt;" in page
    assert page.count("<script") == 1    # the page's own
    assert "<code>a&lt;b</code>" in page  # inside the ratios table's code span


def test_the_results_table_is_the_seed_summary(tmp_path, no_leaders):
    df = results_frame()
    p = parse(report.write_report(make_run(tmp_path / "run")).read_text())
    assert p.head == ["model", "guidance", "solver", "family", "NFE", "NFE used", "FID", "KID", "seeds"]
    assert len(p.rows) == df.groupby(["model", "guidance", "solver", "nfe"]).ngroups == 18
    expected = {}
    for metric in ("fid", "kid"):
        for r in summarize(df, metric).itertuples():
            text = _fmt(r.mean, metric) + (f" ± {_fmt(r.ci95, metric)}" if math.isfinite(r.ci95) else "")
            expected.setdefault((r.model, f"{r.guidance:g}", r.solver, str(r.nfe)), []).append(text)
    got = {tuple(r[:3] + r[4:5]): r for r in p.rows}
    assert set(got) == set(expected)
    for key, (fid, kid) in expected.items():
        row = got[key]
        assert row[6:8] == [fid, kid] and row[8] == "3"
        assert row[5] == ("5–7" if key[2] == EVIL_SOLVER and key[3] == "4" else key[3])
    assert got[("gmm2d", "1", "ddim", "10")][6].count("±") == 1   # two seeds with a value: still an interval
    assert {r[3] for r in p.rows} >= {"other"}                       # an unregistered solver's family


def test_seed_summary_equals_the_tables_summary():
    df = results_frame()
    for metric in ("fid", "kid"):
        want = summarize(df, metric).set_index(["model", "guidance", "solver", "nfe"])
        got = report.seed_summary(df, metric)
        np.testing.assert_allclose(got.loc[want.index, "mean"], want["mean"], rtol=1e-12)
        np.testing.assert_allclose(got.loc[want.index, "ci95"], want["ci95"], rtol=1e-12)


def test_family_is_the_declared_attribute(monkeypatch):
    from solvers import registry
    from solvers.ddim import DDIM

    class Declared(DDIM):
        family = "test family"
    Declared.name = "report-test-declared"
    monkeypatch.setitem(registry._REGISTRY, Declared.name, Declared)
    report.solver_family.cache_clear()
    try:
        assert report.solver_family(Declared.name) == "test family"
        assert report.solver_family("no-such-solver-anywhere") == "other"
    finally:
        report.solver_family.cache_clear()


def test_each_missing_piece_is_a_labelled_absence(tmp_path, no_leaders, monkeypatch):
    page = report.write_report(make_run(tmp_path / "run", figures=False, meta=False, markdown=False)).read_text()
    for text in ("no protocol card: run made before cards; its run.json is missing",
                 "no findings: bench.leaders is not available", "no leaders figures (leaders_*.png)",
                 "no heatmaps (heatmap_*.png)", "no family panels (family_*.png)", "no sample grids (samples_*.png)",
                 "no fid_changes.md in this run", "no ratios.md in this run", "no ratio figures (ratio_*.png)",
                 "no metric-vs-NFE plots"):
        assert text in page, text
    assert "<img" not in page
    (tmp_path / "run" / "results.csv").write_text(",".join(COLUMNS) + "\n")   # a run with no finished cell
    page = report.build_report(tmp_path / "run")
    assert "no results: the run has no finished cells" in page and "no findings: the run has no FID values" in page


def test_a_run_before_cards_shows_its_run_json(tmp_path, no_leaders):
    page = report.write_report(make_run(tmp_path / "run")).read_text()
    section = page.split('<section id="protocol">')[1].split("</section>")[0]
    assert "no protocol card: run made before cards; its run.json says:" in section
    for text in ("<th>models</th><td>gmm2d, &lt;script&gt;", "<th>git_commit</th><td>abc123</td>",
                 "<th>versions</th><td>torch 2.x</td>"):
        assert text in section, text


def test_the_card_is_shown_in_its_own_words(tmp_path, no_leaders, monkeypatch):
    card = {"samples": 8, "note": "<i>user</i>"}
    fake = types.ModuleType("bench.protocol")
    fake.card_lines = lambda c: [f"samples per cell: {c['samples']}", f"note: {c['note']}"]
    monkeypatch.setitem(sys.modules, "bench.protocol", fake)
    page = report.write_report(make_run(tmp_path / "run", card=card)).read_text()
    assert '<ul class="card"><li>samples per cell: 8</li><li>note: &lt;i&gt;user&lt;/i&gt;</li></ul>' in page
    assert "no protocol card" not in page
    monkeypatch.setitem(sys.modules, "bench.protocol", None)
    page = report.build_report(tmp_path / "run")
    assert "protocol card shown raw: bench.protocol is not available" in page and "<th>samples</th><td>8</td>" in page


def test_the_card_is_folded_under_a_summary_line(tmp_path, no_leaders):
    """The leaders come first on the screen: the card sits in a <details> whose summary says the essentials."""
    card = {"samples": 8, "seeds": [0, 1], "dtype": "float32", "git_commit": "0123456789abcdef", "models": {}}
    page = report.write_report(make_run(tmp_path / "run", card=card)).read_text()
    section = page.split('<section id="protocol">')[1].split("</section>")[0]
    summary = section.split("<summary>")[1].split("</summary>")[0]
    assert summary == "protocol card: 8 samples a cell; seeds 0, 1; float32; commit 0123456789ab (click for all of it)"
    assert section.index("</summary>") < section.index('<ul class="card">') < section.index("</details>")


def _fake_leaders(monkeypatch, frame=None, error=None):
    def leaders_frame(df, run_dir, metric="fid", top=5):
        assert metric == "fid" and top == 5 and len(df)
        if error:
            raise error
        return frame
    fake = types.ModuleType("bench.leaders")
    fake.leaders_frame = leaders_frame
    monkeypatch.setitem(sys.modules, "bench.leaders", fake)


def _leaders():
    rows = [("digits", 4.0, 5, 1, "dpmpp-3m", 3.0, math.nan, math.nan, math.nan, True, "paired bootstrap"),
            ("digits", 4.0, 5, 2, "unipc", 3.41, 0.41, 0.2, 0.6, True, "paired bootstrap"),
            ("digits", 4.0, 10, 1, "ddim", 2.0, math.nan, math.nan, math.nan, False, "seeds"),
            ("digits", 4.0, 10, 2, "heun", 2.1, 0.1, -0.3, 0.5, False, "seeds"),
            ("digits", 1.0, 10, 1, "a<b", 2.0, math.nan, math.nan, math.nan, np.True_, "seeds"),
            ("digits", 1.0, 10, 2, "c", 2.5, 0.5, 0.1, 0.9, np.True_, "seeds"),
            ("gmm2d", 1.0, 4, 1, "only", 1.0, math.nan, math.nan, math.nan, False, "seeds")]
    return pd.DataFrame(rows, columns=["model", "guidance", "nfe", "rank", "solver", "mean", "gap", "gap_lo",
                                       "gap_hi", "resolved", "basis"])


def test_findings_state_the_resolved_leaders(tmp_path, monkeypatch):
    said, unresolved = report.findings(_leaders())
    assert said == ["digits, no guidance, NFE 10: a<b best (resolved by seeds: next is c, +0.5 [+0.1, +0.9])",
                    "digits, guidance 4, NFE 5: dpmpp-3m best (resolved by paired bootstrap: next is unipc, "
                    "+0.41 [+0.2, +0.6])"]
    assert unresolved == [("digits", 4.0, 10)]      # a column with one solver states nothing
    _fake_leaders(monkeypatch, _leaders())
    page = report.write_report(make_run(tmp_path / "run")).read_text()
    section = page.split('<section id="findings">')[1].split("</section>")[0]
    assert "<li>digits, no guidance, NFE 10: a&lt;b best" in section
    assert "by NFE: digits, guidance 4: 10." in section


def test_findings_say_why_they_are_missing(tmp_path, monkeypatch):
    _fake_leaders(monkeypatch, error=RuntimeError("no <features>"))
    page = report.write_report(make_run(tmp_path / "run")).read_text()
    assert "no findings: the leaders could not be computed (RuntimeError: no &lt;features&gt;)" in page


def _noise_png(path, side, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def test_images_are_scaled_to_the_budget_and_then_left_out(tmp_path, monkeypatch):
    paths = [tmp_path / f"n{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        _noise_png(p, 200, i)
    full = [len(report.encode_png(p)) for p in paths]
    half = [len(report.encode_png(p, 0.5)) for p in paths]
    b64 = lambda n: 4 * math.ceil(n / 3)  # noqa: E731
    assert all(h < f / 3 for h, f in zip(half, full))
    assert [d for d, _ in report.fit_images(paths, sum(map(b64, full)))] and \
        all(Image.open(io.BytesIO(d)).size == (200, 200) for d, _ in report.fit_images(paths, sum(map(b64, full))))
    got = report.fit_images(paths, sum(map(b64, half)))          # fits at half scale only
    assert [Image.open(io.BytesIO(d)).size for d, _ in got] == [(100, 100)] * 3
    got = report.fit_images(paths, b64(half[0]) + b64(half[1]))  # the last one left out
    assert [d is None for d, _ in got] == [False, False, True]
    assert got[2][1] == "left out to keep the report under its size budget"
    monkeypatch.setattr(report, "IMAGE_CAP", half[0] - 1)        # over the cap at every scale
    assert report.fit_images(paths[:1], 10**9)[0][1].startswith("over the per-image cap")


def test_the_page_stays_within_its_budget(tmp_path, no_leaders, monkeypatch):
    run = make_run(tmp_path / "run")
    for i, name in enumerate(FIGURES.values()):
        _noise_png(run / name, 120, i)
    full = len(report.build_report(run))          # every image at full scale
    for budget in (full - 1, full // 2, full // 4):
        monkeypatch.setattr(report, "REPORT_BUDGET", budget)
        page = report.build_report(run)
        assert len(page) <= budget
    assert page.count("<img") < len(FIGURES) and "left out to keep the report under its size budget" in page


def test_an_unreadable_image_is_a_note(tmp_path, no_leaders):
    run = make_run(tmp_path / "run")
    (run / FIGURES["leaders"]).write_text("not a png")
    page = report.write_report(run).read_text()
    assert f"{FIGURES['leaders']} left out: unreadable image (UnidentifiedImageError)" in page
    assert page.count("<img") == len(FIGURES) - 1


def test_markdown_tables_become_html():
    html = to_html("# Title\n\nSome *x* & **y** `a<b`.\nsecond line\n\n| a | b |\n|---|---:|\n| **1** | 2 |\n"
                   "### Sub\n")
    assert html == ("<h2>Title</h2>\n<p>Some *x* &amp; <strong>y</strong> <code>a&lt;b</code>. second line</p>\n"
                    "<div class=\"scroll\"><table class=\"sortable\"><thead><tr><th>a</th><th class=right>b</th>"
                    "</tr></thead><tbody><tr><td><strong>1</strong></td><td class=right>2</td></tr></tbody></table>"
                    "</div>\n<h4>Sub</h4>")


def test_cli_report(tmp_path, capsys, monkeypatch, no_leaders):
    monkeypatch.setitem(sys.modules, "bench.figures", None)
    run = make_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{run / 'report.html'}\n" and (run / "report.html").is_file()
    assert err == "nfebench: note: leaders figures not drawn: bench.figures is not available\n"
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run at" in err and "cells/ or results.csv" in err


def test_run_writes_the_report_unless_told_not_to(tmp_path, capsys):
    args = ["run", "--models", "gmm2d", "--solvers", "ddim", "--nfe", "2", "--samples", "8", "--metrics", "fid",
            "--no-plots"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert f"open {tmp_path / 'a' / 'report.html'} in a browser" in capsys.readouterr().err
    assert '<section id="results">' in (tmp_path / "a" / "report.html").read_text()
    assert main([*args, "-q", "--no-report", "--out", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / "report.html").exists()


def test_screenshot_cli_refuses_a_run_without_a_report(tmp_path, capsys):
    from bench import report_screenshot
    assert report_screenshot.main([str(tmp_path), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("report_screenshot: error: ")

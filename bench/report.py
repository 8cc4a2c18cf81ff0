"""`nfebench report RUN`: RUN/report.html, one self-contained page of a run.

Sections, in order: the protocol card, the findings the run states by itself (the best solver per NFE where the
leaders' intervals resolve it), the leaders figures, heatmaps and family panels, the results table (sortable by
any column, filterable by model, guidance and solver family), the sample grids, the paired changes and ratios,
and the metric-vs-NFE plots. Images are inline PNG data URIs, the data is in the page, CSS and JS are inline, and
the page's Content-Security-Policy forbids any request: it opens from a file, offline, with no server.

The page stays under REPORT_BUDGET bytes: images are re-encoded with at most 256 colours (matplotlib's figures and
the sample grids lose nothing visible), scaled down together when they do not fit, and the last ones are left out,
each with a note, when even the smallest scale does not fit. Every text from the run (model and solver names
come from users) is escaped."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from .figures import family as solver_family   # the solvers' declared family, cached

REPORT_BUDGET = 4_500_000   # bytes of the whole page: the standard suite's must stay under 5 MB
IMAGE_CAP = 450_000         # bytes of one inlined PNG (before base64)
SCALES = (1.0, 0.75, 0.5)   # common image scales tried, largest first
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NO_CARD = "no protocol card: run made before cards"

# (section id, heading, file pattern, what they are) of the figure sections written by bench.figures
FIGURE_SECTIONS = (("leaders", "Leaders", "leaders_*.png", "leaders figures"),
                   ("heatmaps", "Heatmaps", "heatmap_*.png", "heatmaps"),
                   ("families", "Solver families", "family_*.png", "family panels"))
SECTION_ORDER = ("protocol", "findings", "leaders", "heatmaps", "families", "results", "samples", "changes",
                 "plots")


def esc(v) -> str:
    return html.escape(str(v), quote=True)


# --- images -----------------------------------------------------------------------------------------------

def encode_png(path: Path, scale: float = 1.0) -> bytes:
    """The image as a PNG of at most 256 colours at `scale` of its size (box-filtered); at full scale the file's
    own bytes where they are fewer. Raises OSError (PIL's UnidentifiedImageError is one) on an unreadable file."""
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
        else:
            rgb = im.convert("RGB")
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    buf = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    data = buf.getvalue()
    if scale == 1:
        raw = Path(path).read_bytes()
        if raw.startswith(PNG_MAGIC) and len(raw) < len(data):
            data = raw
    return data


def _b64_len(n: int) -> int:
    return 4 * math.ceil(n / 3)


def fit_images(paths: list[Path], budget: int) -> list[tuple[bytes | None, str]]:
    """(PNG bytes, "") per image, or (None, why it is left out). The largest common scale at which every image fits
    its cap and all fit the budget (in base64); at the smallest scale the last images are left out until the rest
    fit. An image over the cap at one scale is tried at the smaller ones."""
    cache: dict[tuple[int, float], bytes | str] = {}

    def encoded(i: int, scale: float) -> bytes | str:
        if (i, scale) not in cache:
            try:
                cache[i, scale] = encode_png(paths[i], scale)
            except (OSError, ValueError) as e:
                cache[i, scale] = f"unreadable image ({type(e).__name__})"
        return cache[i, scale]

    def choose(i: int, scale: float) -> tuple[bytes | None, str]:
        for s in [s for s in SCALES if s <= scale]:
            data = encoded(i, s)
            if isinstance(data, str):
                return None, data
            if len(data) <= IMAGE_CAP:
                return data, ""
        return None, f"over the per-image cap of {IMAGE_CAP // 1000} kB even at {SCALES[-1]:.0%} scale"

    for scale in SCALES:
        chosen = [choose(i, scale) for i in range(len(paths))]
        if sum(_b64_len(len(d)) for d, _ in chosen if d) <= budget:
            return chosen
    total = sum(_b64_len(len(d)) for d, _ in chosen if d)
    for i in reversed(range(len(chosen))):
        if total <= budget:
            break
        if chosen[i][0]:
            total -= _b64_len(len(chosen[i][0]))
            chosen[i] = (None, "left out to keep the report under its size budget")
    return chosen


class _Images:
    """Images of the page in order, as placeholders until the rest of the page is known (its size sets their
    budget)."""

    def __init__(self):
        self.paths: list[Path] = []

    def figure(self, path: Path) -> str:
        self.paths.append(Path(path))
        return f"\x00{len(self.paths) - 1}\x00"

    def block(self, i: int, data: bytes | None, why: str) -> str:
        name = esc(self.paths[i].name)
        if data is None:
            return f"<p class=\"absent\">{name} left out: {esc(why)}; it is in the run directory.</p>"
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return f"<figure><img src=\"{uri}\" alt=\"{name}\"><figcaption>{name}</figcaption></figure>"

    def fill(self, page: str, budget: int) -> str:
        """Each placeholder replaced by its image, or by the note saying why it is left out; the images get what
        `budget` leaves after the page and each one's markup (the longer of its figure and its note)."""
        markup = sum(max(len(self.block(i, b"", "")), len(self.block(i, None, "x" * 80))) - len(f"\x00{i}\x00")
                     for i in range(len(self.paths)))
        for i, (data, why) in enumerate(fit_images(self.paths, max(0, budget - len(page) - markup))):
            page = page.replace(f"\x00{i}\x00", self.block(i, data, why), 1)
        return page


def _figures(run_dir: Path, pattern: str, images: _Images, absent: str) -> str:
    return _figures_of(sorted(run_dir.glob(pattern)), images, absent)


def _figures_of(paths: list[Path], images: _Images, absent: str) -> str:
    if not paths:
        return f"<p class=\"absent\">{esc(absent)}</p>"
    return "<div class=\"figures\">" + "".join(images.figure(p) for p in paths) + "</div>"


# --- sections ---------------------------------------------------------------------------------------------

def _value_text(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value_text(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_value_text(x) for x in v)
    return "–" if v is None or v == "" else str(v)


def _key_values(pairs) -> str:
    return "<table class=\"card\">" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(_value_text(v))}</td></tr>"
                                             for k, v in pairs) + "</table>"


def protocol_section(meta: dict) -> str:
    """The protocol card, folded under a one-line summary so that the leaders and heatmaps stay on the first
    screen (`_card_body` has it in full)."""
    card = meta.get("protocol")
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    src = card if isinstance(card, dict) and card else spec
    bits = [f"{src[k]} samples a cell" if k == "samples" else f"seeds {', '.join(map(str, src[k]))}"
            if k == "seeds" and isinstance(src[k], list) else str(src[k])
            for k in ("samples", "seeds", "dtype") if k in src]
    commit = (card or {}).get("git_commit") if isinstance(card, dict) else meta.get("git_commit")
    if commit:
        bits.append(f"commit {str(commit)[:12]}")
    what = "protocol card" if isinstance(card, dict) and card else "no protocol card (run made before cards)"
    summary = f"{what}: {'; '.join(bits)} (click for all of it)" if bits else f"{what} (click to show)"
    return f"<details class=\"card\"><summary>{esc(summary)}</summary>{_card_body(meta)}</details>"


def _card_body(meta: dict) -> str:
    """The protocol card (run.json's "protocol", in bench.protocol's words); a run made before cards: what its
    run.json has, labelled as such."""
    card = meta.get("protocol")
    if isinstance(card, dict) and card:
        try:
            from .protocol import card_lines
        except ImportError:
            return "<p class=\"absent\">protocol card shown raw: bench.protocol is not available</p>" + \
                _key_values(card.items())
        try:
            lines = card_lines(card)
        except (KeyError, TypeError, ValueError) as e:
            return (f"<p class=\"absent\">protocol card shown raw: it could not be read ({esc(type(e).__name__)}: "
                    f"{esc(e)})</p>" + _key_values(card.items()))
        return "<ul class=\"card\">" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>"
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    keys = ("models", "solvers", "nfe", "guidance", "seeds", "samples", "metrics", "dtype", "model_dtype")
    pairs = [(k, spec[k]) for k in keys if k in spec]
    pairs += [(k, meta[k]) for k in ("device", "versions", "git_commit", "command", "started", "finished")
              if k in meta]
    if not pairs:
        return f"<p class=\"absent\">{NO_CARD}; its run.json is missing or holds no spec</p>"
    return f"<p class=\"absent\">{NO_CARD}; its run.json says:</p>" + _key_values(pairs)


def _true(v) -> bool:
    """A resolved flag: True and numpy's True only (a missing value, NaN, is not a resolution)."""
    import numpy as np
    return isinstance(v, (bool, np.bool_)) and bool(v)


def _guidance_words(g) -> str:
    return "no guidance" if float(g) == 1 else f"guidance {float(g):g}"


def findings(leaders) -> tuple[list[str], list[tuple]]:
    """(sentences, unresolved (model, guidance, NFE)) from bench.leaders' frame: per (model, guidance, NFE), the
    rank-1 solver where its `resolved` flag (the runner-up's gap interval excludes 0) says the lead is real, with
    the runner-up's gap (metric(next) - metric(best)) and its interval [gap_lo, gap_hi]. A column with one solver
    states nothing."""
    said, unresolved = [], []
    for (model, g, nfe), part in leaders.groupby(["model", "guidance", "nfe"], sort=True):
        part = part.sort_values("rank")
        if len(part) < 2:
            continue
        lead, nxt = part.iloc[0], part.iloc[1]
        where = f"{model}, {_guidance_words(g)}, NFE {nfe}"
        if not _true(lead["resolved"]):
            unresolved.append((model, g, nfe))
            continue
        gap = nxt["gap"] if "gap" in part.columns and _finite(nxt["gap"]) else nxt["mean"] - lead["mean"]
        lo, hi = nxt["gap_lo"], nxt["gap_hi"]
        interval = f" [{float(lo):+.3g}, {float(hi):+.3g}]" if _finite(lo) and _finite(hi) else ""
        basis = f" by {lead['basis']}" if isinstance(lead.get("basis"), str) and lead["basis"] else ""
        said.append(f"{where}: {lead['solver']} best (resolved{basis}: next is {nxt['solver']}, "
                    f"{float(gap):+.3g}{interval})")
    return said, unresolved


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def findings_section(df, run_dir: Path) -> str:
    if not len(df) or "fid" not in df.columns or not df["fid"].notna().any():
        return "<p class=\"absent\">no findings: the run has no FID values</p>"
    try:
        from .leaders import leaders_frame
    except ImportError:
        return "<p class=\"absent\">no findings: bench.leaders is not available</p>"
    try:
        said, unresolved = findings(leaders_frame(df, run_dir, metric="fid", top=5))
    except Exception as e:   # noqa: BLE001 -- the report is still written, with the reason on the page
        return f"<p class=\"absent\">no findings: the leaders could not be computed ({esc(type(e).__name__)}: " \
               f"{esc(e)})</p>"
    out = "<p>Best solver by FID at each NFE, stated where the interval resolves it from the next.</p>"
    out += "<ul class=\"findings\">" + "".join(f"<li>{esc(s)}</li>" for s in said) + "</ul>" if said else \
        "<p class=\"absent\">no NFE column has a resolved best solver</p>"
    if unresolved:
        by_column: dict[str, list[str]] = {}
        for model, g, nfe in unresolved:
            by_column.setdefault(f"{model}, {_guidance_words(g)}", []).append(str(nfe))
        out += ("<p>Not resolved (the runner-up's interval includes no difference), by NFE: " + esc("; ".join(
            f"{k}: {', '.join(v)}" for k, v in by_column.items())) + ".</p>")
    return out


def results_rows(df) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table: per (model, guidance, solver, NFE), its family, NFE used, each
    metric's mean ± 95% half-width over seeds (as the tables print them) and the seed count."""
    from .results_rows import METRIC_NAMES
    from .tables import _fmt
    metrics = [m for m in METRIC_NAMES if m in df.columns and df[m].notna().any()
               and (m != "diverged_frac" or (df[m] > 0).any())]
    keys = ["model", "guidance", "solver", "nfe"]
    groups = df.groupby(keys, sort=False)
    base = groups.size().rename("seeds").reset_index()
    used = groups["nfe_used"].agg(["min", "max"]).reset_index() if "nfe_used" in df.columns else None
    cols = {m: seed_summary(df, m) for m in metrics}
    rows = []
    for i, r in base.iterrows():
        key = tuple(r[k] for k in keys)
        row = [str(r["model"]), f"{float(r['guidance']):g}", str(r["solver"]), solver_family(str(r["solver"])),
               str(int(r["nfe"]))]
        lo, hi = (used.loc[i, "min"], used.loc[i, "max"]) if used is not None else (math.nan, math.nan)
        row.append("–" if not _finite(lo) else f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}")
        for m in metrics:
            mean, ci = cols[m].at[key, "mean"], cols[m].at[key, "ci95"]
            text = "–" if not _finite(mean) else _fmt(float(mean), m)
            if _finite(mean) and _finite(ci):
                text += f" ± {_fmt(float(ci), m)}"
            row.append(text)
        row.append(str(int(r["seeds"])))
        rows.append(row)
    return ["model", "guidance", "solver", "family", "NFE", "NFE used", *(METRIC_NAMES[m] for m in metrics),
            "seeds"], rows


def seed_summary(df, metric: str):
    """bench.tables.summarize's mean and ci95 (Student t over the seeds with a value), indexed by (model,
    guidance, solver, nfe), computed column-wise: its per-group apply takes seconds on a suite."""
    import numpy as np
    from scipy import stats
    g = df.groupby(["model", "guidance", "solver", "nfe"], sort=False)[metric]
    out = g.agg(["mean", "std", "count"])
    n = out["count"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        hw = stats.t.ppf(0.975, n - 1) * out["std"].to_numpy() / np.sqrt(n)
    out["ci95"] = np.where(n > 1, hw, math.nan)
    return out[["mean", "ci95"]]


FILTERED = ("model", "guidance", "family")


def results_section(df) -> str:
    if not len(df):
        return "<p class=\"absent\">no results: the run has no finished cells</p>"
    head, rows = results_rows(df)
    selects = []
    for name in FILTERED:
        col = head.index(name)
        values = sorted({r[col] for r in rows}, key=lambda v: (float(v), v) if name == "guidance" else (0, v))
        opts = "".join(f"<option value=\"{esc(v)}\">{esc(v)}</option>" for v in values)
        selects.append(f"<label>{name} <select data-col=\"{col}\" data-filter=\"{name}\"><option value=\"\">all"
                       f"</option>{opts}</select></label>")
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<p>Mean ± 95% interval over seeds per cell; click a column header to sort, again to reverse. "
            f"<span id=\"shown\">{len(rows)} of {len(rows)} rows</span></p>"
            f"<div class=\"filters\">{''.join(selects)}</div>"
            f"<div class=\"scroll tall\"><table id=\"results-table\" class=\"sortable\"><thead><tr>{ths}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def markdown_file_section(run_dir: Path, name: str) -> str:
    from .markdown_html import to_html
    path = run_dir / name
    if not path.is_file():
        return f"<p class=\"absent\">no {esc(name)} in this run (nfebench run --fid-changes / --ratios MOD/BASE " \
               f"write it)</p>"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return f"<p class=\"absent\">{esc(name)} unreadable ({esc(type(e).__name__)})</p>"
    return to_html(text, heading_offset=2)   # its title (#) under the section's h2


def _metric_plots(run_dir: Path) -> list[Path]:
    """metric_<model>_g<g>.png for each registered metric, FID first."""
    from .results_rows import METRIC_NAMES
    names = ["fid", *(m for m in METRIC_NAMES if m != "fid")]
    return [p for m in names for p in sorted(run_dir.glob(f"{m}_*.png"))]


# --- the page ---------------------------------------------------------------------------------------------

def read_meta(run_dir: Path) -> dict:
    """run.json as a dict, {} when missing or unreadable (the report reads; it never moves a file)."""
    try:
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def build_report(run_dir) -> str:
    from .store import load_results
    run_dir = Path(run_dir)
    df = load_results(run_dir)
    meta = read_meta(run_dir)
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    name = str(spec.get("name") or run_dir.name)
    images = _Images()
    sections = {
        "protocol": ("Protocol", protocol_section(meta)),
        "findings": ("Findings", findings_section(df, run_dir)),
        **{sid: (title, _figures(run_dir, pattern, images, f"no {what} ({pattern}) in this run directory"))
           for sid, title, pattern, what in FIGURE_SECTIONS},
        "results": ("Results", results_section(df)),
        "samples": ("Sample grids", _figures(run_dir, "samples_*.png", images,
                                             "no sample grids (samples_*.png) in this run directory")),
        "changes": ("Paired changes and ratios",
                    markdown_file_section(run_dir, "fid_changes.md") + markdown_file_section(run_dir, "ratios.md")
                    + _figures(run_dir, "ratio_*.png", images, "no ratio figures (ratio_*.png) in this run directory")),
        "plots": ("Metric vs NFE", _figures_of(_metric_plots(run_dir), images, "no metric-vs-NFE plots (fid_*.png, "
                                               "...) in this run directory (nfebench plot RUN draws them)")),
    }
    nav = " · ".join(f"<a href=\"#{sid}\">{esc(sections[sid][0])}</a>" for sid in SECTION_ORDER)
    body = "".join(f"<section id=\"{sid}\"><h2>{esc(sections[sid][0])}</h2>{sections[sid][1]}</section>"
                   for sid in SECTION_ORDER)
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>nfebench report: {esc(name)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>nfebench report: {esc(name)}</h1><nav>{nav}</nav></header><main>{body}</main>"
            f"<script>{JS}</script></body></html>\n")
    # ASCII only (other characters as references; CSS and JS are ASCII): the same bytes under any locale
    return images.fill(page.encode("ascii", "xmlcharrefreplace").decode("ascii"), REPORT_BUDGET)


def write_report(run_dir) -> Path:
    """RUN/report.html (written atomically); raises FileNotFoundError where RUN holds no run."""
    from .store import atomic_write
    path = Path(run_dir) / "report.html"
    atomic_write(path, build_report(run_dir))
    return path


def draw_figures(run_dir) -> str | None:
    """bench.figures' leaders, heatmap, family and ratio figures into the run directory; a note where that module
    is not available."""
    try:
        from .figures import write_figures
    except ImportError:
        return "leaders figures not drawn: bench.figures is not available"
    write_figures(run_dir, metric="fid", fmt="png")
    return None


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;background:#fff}
header{padding:12px 24px;border-bottom:1px solid #ddd;background:#f7f7f9}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #eee}
h3{font-size:15px;margin:16px 0 6px}h4,h5,h6{font-size:14px;margin:12px 0 4px}
main{padding:0 24px 40px}nav a{color:#2050a0;text-decoration:none}
.absent{color:#8a4b00;background:#fff6e8;border-left:3px solid #e0a040;padding:4px 8px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{border-bottom:1px solid #e4e4e4;padding:2px 8px;text-align:left;white-space:nowrap}
td.right,th.right{text-align:right}td.center,th.center{text-align:center}
table.sortable th{cursor:pointer;user-select:none;background:#f3f3f6;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
table.card th{background:none;font-weight:600;vertical-align:top}table.card td{white-space:normal}
ul.card{columns:2;list-style:none;padding:0}
.scroll{overflow:auto;max-width:100%}.tall{max-height:70vh}
.filters label{margin-right:14px}
.figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:12px;color:#555}
"""

JS = """
(function(){
  function key(td){
    var s=td.textContent.trim();
    if(s===''||s==='\\u2013'||s==='-')return null;
    if(/^[+-]?(\\d|\\.\\d)/.test(s))return parseFloat(s);
    return s;
  }
  function cmp(a,b){
    if(a===null||b===null)return 0;
    if(typeof a===typeof b)return typeof a==='number'?a-b:a.localeCompare(b,undefined,{numeric:true});
    return typeof a==='number'?-1:1;
  }
  function sortBy(table,th,col){
    var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
    table.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir===1?'ascending':'descending');
    var tbody=table.tBodies[0],rows=Array.prototype.slice.call(tbody.rows);
    var keyed=rows.map(function(r,i){return {r:r,k:key(r.cells[col]||r.cells[0]),i:i};});
    keyed.sort(function(x,y){
      if(x.k===null||y.k===null)return (x.k===null)-(y.k===null)||x.i-y.i;
      return dir*cmp(x.k,y.k)||x.i-y.i;
    });
    keyed.forEach(function(x){tbody.appendChild(x.r);});
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('thead th').forEach(function(th,col){
      th.tabIndex=0;
      th.addEventListener('click',function(){sortBy(table,th,col);});
      th.addEventListener('keydown',function(e){if(e.key==='Enter')sortBy(table,th,col);});
    });
  });
  var table=document.getElementById('results-table');
  if(!table)return;
  var selects=document.querySelectorAll('select[data-filter]'),shown=document.getElementById('shown');
  function filter(){
    var rows=table.tBodies[0].rows,n=0;
    for(var i=0;i<rows.length;i++){
      var ok=true;
      selects.forEach(function(s){if(s.value&&rows[i].cells[+s.dataset.col].textContent!==s.value)ok=false;});
      rows[i].hidden=!ok;n+=ok;
    }
    shown.textContent=n+' of '+rows.length+' rows';
  }
  selects.forEach(function(s){s.addEventListener('change',filter);});
})();
"""

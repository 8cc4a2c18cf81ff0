"""The protocol card: what a run's numbers were measured under, in one JSON-able dict.

A reader of a table or a plot needs the setup behind it: the model and its weights, the FID feature extractor
and its weights, the reference the samples are scored against, samples per cell, seeds, each solver's options
and grid as resolved, the dtypes, the NFE convention, and the software, device and commit that ran it. The
runner writes the card into run.json under "protocol"; tables put it in their captions, the report shows
`card_lines`. Making it is cheap: models are loaded (the plan loads them anyway), never run; a weights or
statistics file is hashed once (bench/identity.py caches the digests).

Two runs are comparable when their protocols agree on everything that shapes a cell's numbers (samples,
seeds, dtypes, metric settings, and the models and solvers they share); the grid's coordinates (which models,
solvers, NFEs and guidance scales each ran) may differ, since combining runs is how a comparison grows. The
software, device and commit are provenance: reported when they differ, never a reason to refuse a comparison.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CARD_VERSION = 1
NFE_CONVENTION = ("NFE = network evaluations per sample; a guided evaluation (conditional and unconditional "
                  "passes batched) counts as 1 NFE; a solver spends at most its budget; adaptive solvers (dopri5) "
                  "choose their own steps and are shown at the NFE they used")
PACKAGES = ("nfebench", "torch", "numpy", "scipy", "torchdiffeq", "torch-fidelity", "pandas", "diffusers")
# what differs between runs without making their numbers incomparable
PROVENANCE = ("versions", "python", "device", "git_commit")
# the grid's coordinates: combining runs is how a comparison gains solvers, NFEs, models and guidance scales
COORDINATES = ("nfe", "guidance", "metrics", "runs", "not_comparable", "provenance_differs", "source",
               "card_version")
SHARED = ("models.", "solvers.", "metric_settings.")   # compared between the runs that hold the model, solver, metric


# ---- provenance --------------------------------------------------------------------------------------------

def package_versions() -> dict:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """HEAD of the package's checkout, '-dirty' when tracked files differ from it; None outside a checkout."""
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def device_name(dev) -> str:
    import torch
    if str(dev).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ---- the card ----------------------------------------------------------------------------------------------

def protocol_card(spec, load=None) -> dict:
    """The card of a run spec (a RunConfig). `load(model_spec)` gives a model (default: load_model)."""
    from models import load_model
    from solvers import get_solver

    from .identity import solver_identity
    load = load or load_model
    solvers = {}
    for s in spec.solvers:
        solver = get_solver(s)
        ident = solver_identity(solver)
        solvers[solver.spec] = {"name": ident["name"], "grid": solver.options.get("grid"),
                                "options": ident["options"],
                                **({"source_sha256": ident["source_sha256"]} if "source_sha256" in ident else {})}
    settings = {}
    if "kid" in spec.metrics:
        settings["kid_subsets"] = spec.kid_subsets
    if "traj_rmse" in spec.metrics:
        settings["reference_rtol"] = float(spec.reference_rtol)
        settings["reference_samples"] = spec.reference_samples or "all"
    return {"card_version": CARD_VERSION,
            "models": {m: model_card(spec, m, load(m)) for m in spec.models},
            "solvers": solvers,
            "samples": spec.samples, "seeds": list(spec.seeds), "nfe": list(spec.nfe),
            "guidance": [float(g) for g in spec.guidance],
            "dtype": spec.dtype, "model_dtype": spec.model_dtype or spec.dtype,
            "metrics": list(spec.metrics), "metric_settings": settings,
            "nfe_convention": NFE_CONVENTION,
            "versions": package_versions(), "python": sys.version.split()[0],
            "device": device_name(spec.device), "git_commit": git_commit()}


def model_card(spec, model_spec: str, model) -> dict:
    """A model's weights, FID feature extractor (its weights and width) and reference."""
    from .identity import feature_identity, model_identity
    from .memory import FEATURE_DIMS
    ident = model_identity(model_spec, model)
    kind = model.feature_extractor
    features = feature_identity(spec, model)
    return {"name": ident["name"], "options": ident["options"], "weights_sha256": ident["weights_sha256"],
            "conditional": model.num_classes is not None,
            "feature_extractor": kind,
            "feature_extractor_sha256": features.get("weights_sha256", "data"),
            "feature_dim": FEATURE_DIMS.get(kind, math.prod(model.shape)),   # 'data': the samples' own size
            "reference": reference_card(spec, model)}


def reference_card(spec, model) -> dict:
    """What a model's samples are scored against, and its digest where one is cheap to take."""
    import hashlib

    from .identity import file_sha256
    kind = model.feature_extractor
    if kind == "data":
        ref = model.reference
        arrays = [ref.mean, ref.cov] if ref.mean is not None else [ref.samples]
        h = hashlib.sha256(b"".join(a.detach().cpu().double().numpy().tobytes() for a in arrays)).hexdigest()
        return {"kind": "exact", "what": "the model's exact distribution (FID: its moments; KID: exact samples)",
                "sha256": h}
    if kind == "inception-v3-compat" and spec.fid_stats:
        return {"kind": "statistics file", "what": str(spec.fid_stats), "sha256": file_sha256(spec.fid_stats)}
    name = str(model.fid_reference)
    from models.digits_data import DATASET_NAME, load_digits_tensors
    if name == DATASET_NAME:
        x, y = load_digits_tensors()
        h = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
        return {"kind": "data set", "what": "scikit-learn's digits data set, 1,797 images", "sha256": h}
    if Path(name).is_dir():
        return {"kind": "image folder", "what": name, "sha256": None}
    return {"kind": "data set", "what": f"torch-fidelity's '{name}'", "sha256": None}


def read_card(run_dir) -> dict | None:
    """run.json's card; for a run made before cards, a partial one from its spec (no digests, 'source' says so);
    None without a readable run.json."""
    p = Path(run_dir) / "run.json"
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if _well_formed(meta.get("protocol")):
        return meta["protocol"]
    spec = meta.get("spec") or {}
    if not isinstance(spec, dict) or not all(isinstance(spec.get(k, []), list) for k in ("solvers", "models",
                                                                                        "metrics")):
        return None
    from solvers import get_solver
    from solvers.options import SpecError
    solvers = {}
    for s in spec.get("solvers", []):
        try:
            solver = get_solver(s)
            solvers[solver.spec] = {"name": solver.name, "grid": solver.options.get("grid"),
                                    "options": {k: _plain(v) for k, v in solver.options.items()}}
        except (SpecError, ValueError, TypeError):   # a plugin not loaded here
            solvers[s] = {"name": s.partition(":")[0], "grid": None, "options": {}}
    metrics = list(spec.get("metrics", []))
    settings = {k: spec[k] for k, m in (("kid_subsets", "kid"), ("reference_rtol", "traj_rmse")) if m in metrics
                and k in spec}
    return {"card_version": 0, "source": "run.json before protocol cards: from its spec, without digests",
            "models": {m: {"name": m.partition(":")[0]} for m in spec.get("models", [])},
            "solvers": solvers, "samples": spec.get("samples"), "seeds": spec.get("seeds"), "nfe": spec.get("nfe"),
            "guidance": spec.get("guidance"), "dtype": spec.get("dtype"),
            "model_dtype": spec.get("model_dtype") or spec.get("dtype"), "metrics": metrics,
            "metric_settings": settings, "nfe_convention": NFE_CONVENTION,
            "versions": meta.get("versions"), "python": meta.get("python"), "device": meta.get("device"),
            "git_commit": meta.get("git_commit")}


def _well_formed(card) -> bool:
    """A card as protocol_card writes it (run.json is read back untrusted: anything else is ignored)."""
    if not isinstance(card, dict):
        return False
    parts = [card.get("models"), card.get("solvers")]
    return all(isinstance(p, dict) and all(isinstance(v, dict) for v in p.values()) for p in parts) and \
        isinstance(card.get("seeds"), list) and isinstance(card.get("versions", {}), dict) and \
        isinstance(card.get("metric_settings", {}), dict) and isinstance(card.get("metrics", []), list)


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v if isinstance(v, (bool, int, float, str)) or v is None else str(v)


# ---- warnings the protocol itself implies ------------------------------------------------------------------

def fid_dimension_warnings(card: dict) -> list[str]:
    """One line per model whose FID is taken over fewer samples than its features have dimensions."""
    if not card or not {"fid", "kid"} & set(card.get("metrics") or []):
        return []
    n = card.get("samples") or 0
    out = []
    for m, mc in (card.get("models") or {}).items():
        d = mc.get("feature_dim")
        if d and n < d:
            space = "data space" if mc.get("feature_extractor") == "data" else f"{mc.get('feature_extractor')} features"
            out.append(f"FID of {m} over {n} samples in {d}-dimensional {space}: "
                       f"fewer samples than dimensions, so the covariance is singular and FID biased upwards; "
                       "compare FIDs only at one sample count")
    return out


def why_missing(card: dict | None, model: str, metric: str) -> str | None:
    """Why a metric the run asked for has no value for a model's cells, when the protocol says (None: unknown)."""
    mc = ((card or {}).get("models") or {}).get(model) or {}
    if metric == "cond_acc":
        if mc.get("conditional") is False:
            return f"{model} is unconditional (conditional accuracy needs class labels)"
        if mc.get("feature_extractor") not in (None, "digits-classifier"):
            return f"{model} has no classifier ({mc.get('feature_extractor')} features)"
    if metric == "kid" and (mc.get("reference") or {}).get("kind") == "statistics file":
        return "KID needs the reference's features; --fid-stats gives only its mean and covariance"
    return None


# ---- comparing cards ---------------------------------------------------------------------------------------

def differences(cards: dict) -> list[str]:
    """What makes the runs' numbers incomparable, one line per field: 'samples: 200 (a) vs 100 (b)'. Models and
    solvers are compared where runs share them; the coordinates and the provenance are left out."""
    return _compare(cards, lambda k: k not in PROVENANCE + COORDINATES)


def provenance_differences(cards: dict) -> list[str]:
    """Where the runs' software, device or commit differ (reported, not a reason to refuse a comparison)."""
    return _compare(cards, lambda k: k in PROVENANCE)


def _compare(cards: dict, keep) -> list[str]:
    names = list(cards)
    if len(names) < 2:
        return []
    flat = {r: _flatten({k: v for k, v in (cards[r] or {}).items() if keep(k)}) for r in names}
    out = []
    for key in sorted(set().union(*flat.values())):
        held = {r: flat[r][key] for r in names if key in flat[r]}
        shared = key.startswith(SHARED)   # compared only between the runs that hold it
        values = list(held.values()) if shared else [flat[r].get(key, "(none)") for r in names]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            where = held if shared else {r: flat[r].get(key, "(none)") for r in names}
            out.append(f"{key}: " + " vs ".join(f"{_short(v)} ({r})" for r, v in where.items()))
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts to 'models.digits.weights_sha256'-style keys (lists stay values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def combine(cards: dict) -> dict:
    """One card for several runs' results: the first run's, with the runs' names, what makes them not comparable
    (`not_comparable`) and where their provenance differs. Models and solvers are the union."""
    names = [r for r in cards if cards[r]]
    if not names:
        return {}
    first = dict(cards[names[0]])
    if len(cards) == 1:
        return first
    first["models"] = {k: v for r in reversed(names) for k, v in (cards[r].get("models") or {}).items()}
    first["solvers"] = {k: v for r in reversed(names) for k, v in (cards[r].get("solvers") or {}).items()}
    first["runs"] = list(cards)
    missing = [r for r in cards if not cards[r]]
    first["not_comparable"] = differences({r: cards[r] for r in names}) + \
        [f"{r}: no run.json, protocol unknown" for r in missing]
    first["provenance_differs"] = provenance_differences({r: cards[r] for r in names})
    return first


def flag(card: dict | None) -> str | None:
    """'NOT COMPARABLE: <fields>' when a combined card's runs differ in protocol; None otherwise."""
    diffs = (card or {}).get("not_comparable") or []
    if not diffs:
        return None
    return f"NOT COMPARABLE: runs {', '.join(card.get('runs', []))} differ in " + "; ".join(diffs)


# ---- the card in words -------------------------------------------------------------------------------------

def _sha(s) -> str:
    return s[:12] if isinstance(s, str) and len(s) == 64 else str(s)


def _seeds(seeds) -> str:
    seeds = list(seeds or [])
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _model_words(m: str, mc: dict) -> str:
    w = mc.get("weights_sha256")
    return f"{m} (weights sha256 {_sha(w)})" if w else f"{m} (exact, no weights)" if "weights_sha256" in mc else m


def _features_words(m: str, mc: dict) -> str:
    kind = mc.get("feature_extractor")
    if kind is None:
        return ""
    dim = f", {mc['feature_dim']}-d" if mc.get("feature_dim") else ""
    if kind == "data":
        return f"{m}: the data space{dim}"
    sha = mc.get("feature_extractor_sha256")
    return f"{m}: {kind} (weights sha256 {_sha(sha)}{dim})"


def _reference_words(m: str, mc: dict) -> str:
    ref = mc.get("reference")
    if not ref:
        return ""
    sha = f", sha256 {_sha(ref['sha256'])}" if ref.get("sha256") else ""
    return f"{m}: {ref.get('kind')}, {ref.get('what')}{sha}"


def _grids(card: dict, solvers=None) -> str:
    by: dict[str, list[str]] = {}
    for s, sc in (card.get("solvers") or {}).items():
        if solvers is None or s in solvers:
            by.setdefault(str(sc.get("grid")), []).append(s)
    return "; ".join(f"{g}: {', '.join(ss)}" for g, ss in sorted(by.items()))


def _dtypes(card: dict) -> str:
    d, md = card.get("dtype"), card.get("model_dtype")
    return f"{d}" if not md or md == d else f"{d} (network {md})"


def card_lines(card: dict | None) -> list[str]:
    """The card as short lines for a reader (the report, `nfebench table`)."""
    if not card:
        return ["protocol: unknown (no run.json)"]
    lines = []
    if flag(card):
        lines.append(flag(card))
    if card.get("source"):
        lines.append(f"protocol card: {card['source']}")
    models = card.get("models") or {}
    lines.append("models: " + "; ".join(_model_words(m, mc) for m, mc in models.items()))
    feats = [w for w in (_features_words(m, mc) for m, mc in models.items()) if w]
    if feats:
        lines.append("FID features: " + "; ".join(feats))
    refs = [w for w in (_reference_words(m, mc) for m, mc in models.items()) if w]
    if refs:
        lines.append("reference: " + "; ".join(refs))
    lines.append(f"samples per cell: {card.get('samples')}; seeds: {_seeds(card.get('seeds'))}; "
                 f"dtype: {_dtypes(card)}")
    settings = card.get("metric_settings") or {}
    lines.append("metrics: " + ", ".join(card.get("metrics") or []) +
                 ("" if not settings else " (" + ", ".join(f"{k} {v}" for k, v in settings.items()) + ")"))
    lines.append("grids: " + _grids(card))
    for s, sc in (card.get("solvers") or {}).items():
        opts = ", ".join(f"{k}={v}" for k, v in (sc.get("options") or {}).items())
        lines.append(f"solver {s}: {opts}" + (f" (plugin sha256 {_sha(sc['source_sha256'])})"
                                              if sc.get("source_sha256") else ""))
    lines.append(f"NFE convention: {card.get('nfe_convention')}")
    versions = card.get("versions") or {}
    lines.append("software: " + ", ".join(f"{k} {v}" for k, v in versions.items()) +
                 (f"; python {card['python']}" if card.get("python") else ""))
    lines.append(f"device: {card.get('device')}; git commit: {card.get('git_commit')}")
    if card.get("provenance_differs"):
        lines.append("provenance differs (not a protocol difference): " + "; ".join(card["provenance_differs"]))
    return lines


def _scored_words(mc: dict) -> str:
    """', FID in <features> against <reference>' for a caption."""
    kind, ref = mc.get("feature_extractor"), mc.get("reference") or {}
    if kind is None:
        return ""
    dim = f"{mc['feature_dim']}-d" if mc.get("feature_dim") else ""
    sha = mc.get("feature_extractor_sha256")
    feats = f"the data space ({dim})" if kind == "data" else \
        f"{kind} features ({', '.join(x for x in (dim, f'weights sha256 {_sha(sha)}' if sha else '') if x)})"
    against = ""
    if ref:
        digest = f", sha256 {_sha(ref['sha256'])}" if ref.get("sha256") else ""
        against = f" against {ref.get('what') if ref.get('kind') != 'exact' else 'its exact distribution'}{digest}"
    return f", FID in {feats}{against}"


def caption(card: dict | None, fmt: str = "md", models=None, solvers=None) -> str:
    """A compact one-paragraph protocol for a table's caption ('md' or 'latex'), restricted to the table's
    models and solvers when given; '' without a card."""
    if not card:
        return ""
    ms = {m: mc for m, mc in (card.get("models") or {}).items() if models is None or m in models}
    parts = [_model_words(m, mc) + _scored_words(mc) for m, mc in ms.items()]
    parts.append(f"{card.get('samples')} samples per cell, seeds {_seeds(card.get('seeds'))}, {_dtypes(card)}")
    parts.append("grids " + _grids(card, solvers))
    parts.append("a guided evaluation counts 1 NFE")
    versions = card.get("versions") or {}
    soft = ", ".join(f"{k} {versions[k]}" for k in ("nfebench", "torch") if k in versions)
    commit = card.get("git_commit")
    parts.append(", ".join(x for x in (soft, str(card.get("device")), commit and f"commit {commit[:12]}") if x))
    text = "Protocol: " + "; ".join(p for p in parts if p) + "."
    if card.get("source"):
        text += f" ({card['source']}.)"
    if flag(card):
        text = f"{flag(card)}. {text}"
    if fmt == "latex":
        from .results_rows import tex_escape
        return tex_escape(text)
    return text

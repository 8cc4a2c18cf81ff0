"""The design rules of docs/architecture.md, checked on the source: the import graph has no cycle, solvers/ is pure
(no import of bench/ or models/, no I/O), no solver reads the Denoiser's remaining budget, the harness does not probe
other packages' objects with getattr/hasattr, and every solver spends exactly the NFE of its plan."""
import ast
from pathlib import Path

import pytest
import torch

import models
import solvers
from solvers import BelowMinimumNFE, Denoiser, FixedNFE, get_solver

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("solvers", "models", "bench")


def _modules():
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = (f, ast.parse(f.read_text(), filename=str(f)))
    return out


MODULES = _modules()


def _imports(name, tree):
    """Project modules imported by module `name` (absolute and relative imports, at any depth in the file)."""
    is_pkg = MODULES[name][0].name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, tree) for name, (_, tree) in MODULES.items()}


def test_the_import_graph_has_no_cycle():
    """Package __init__ files re-export their modules; an edge into a package's own __init__ from inside it is
    the re-export direction, not a cycle of the design, so it is left out."""
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and "." not in t)} for m, ts in GRAPH.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layers_import_downwards_only():
    """bench -> models -> solvers: solvers import neither, models do not import bench."""
    bad = [(m, t) for m, ts in GRAPH.items() for t in ts
           if (m.startswith("solvers") and t.split(".")[0] in ("bench", "models"))
           or (m.startswith("models") and t.split(".")[0] == "bench")]
    assert not bad, bad


IO_NAMES = {"open", "print", "input", "exec", "eval", "__import__"}
IO_MODULES = {"os", "sys", "io", "pathlib", "shutil", "json", "pickle", "importlib", "subprocess", "socket",
              "urllib", "requests", "tempfile", "glob", "safetensors"}
IO_ATTRS = {"save", "load", "read_text", "write_text", "read_bytes", "write_bytes", "from_file", "tofile",
            "fromfile", "savetxt", "loadtxt"}


def test_solvers_do_no_io():
    found = []
    for name, (f, tree) in MODULES.items():
        if not name.startswith("solvers"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{name}: import {a.name}" for a in node.names if a.name.split(".")[0] in IO_MODULES]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] in IO_MODULES:
                found.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_NAMES:
                found.append(f"{name}:{node.lineno}: {node.func.id}()")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in IO_ATTRS:
                found.append(f"{name}:{node.lineno}: .{node.func.attr}()")
    assert not found, found


def test_no_solver_reads_the_remaining_budget():
    """The plan is the only map from a budget to a discretization: a solver never looks at what is left."""
    uses = [f"{name}:{node.lineno}" for name, (_, tree) in MODULES.items() if name.startswith("solvers")
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("remaining", "budget") and name != "solvers.denoiser"]
    assert not uses, uses


# getattr/hasattr that stay, each on an object of its own module or of a library (not another package's model or
# solver): the reason is listed in docs/architecture.md#capabilities
ALLOWED_PROBES = {
    "bench.cli": {"args"},                 # argparse namespaces: a subcommand has only its own flags
    "bench.spec": {"self", "e"},           # the RunConfig dataclass's own fields; OSError.strerror
    "bench.safe_load": {"np", "dtypes", "torch", "tfu"},   # numpy/torch versions differ in what they export
    "bench.store": {"row", "obj"},         # pandas rows or dicts; numpy scalars or floats
    "bench.runfiles": {"z"},               # np.load returns an NpzFile or an array
    "models.classifier": {"x"},            # the shape of what a user passed, for the error message
    "bench.memory": {"obj"},               # walks a model's own attributes for its tensors
    "bench.executor_ray": {"rex"},         # Ray's exception classes differ between its versions
}


def test_no_getattr_probing_across_packages():
    found = []
    for name, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("getattr", "hasattr") and node.args:
                target = ast.unparse(node.args[0])
                if target not in ALLOWED_PROBES.get(name, set()):
                    found.append(f"{name}:{node.lineno}: {node.func.id}({target}, ...)")
    assert not found, found


LADDER = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20, 25, 30)


def _specs():
    out = []
    for name in solvers.list_solvers():
        if get_solver(name).consistency_sampler:
            out.append((name, "gmm2d-flow"))
        elif get_solver(name).flow_sampler:
            out.append((name, "gmm2d:schedule=rectified-flow,prediction=flow"))
        elif name.endswith("+dc"):
            out.append((name + ":ratio=1.05", "gmm2d"))
        else:
            out.append((name, "gmm2d"))
    return out


@pytest.mark.parametrize("spec,model_name", _specs())
@pytest.mark.parametrize("grid", [None, "trailing"])
def test_nfe_used_equals_the_plan(spec, model_name, grid):
    """Every registered solver, every NFE it plans, on a grid ending at sigma > 0 and on one ending at sigma = 0:
    the evaluations counted by the Denoiser are the plan's NFE, never more than the budget."""
    model = models.load_model(model_name, dtype=torch.float64)
    if grid and get_solver(spec).flow_sampler:   # a rectified flow's grid ending at sigma = 0 (continuous time)
        grid = "flow_linspace"
    if grid:
        spec += ("," if ":" in spec else ":") + f"grid={grid}"
    solver = get_solver(spec)
    x_T = torch.randn((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * \
        float(model.schedule.sigma(model.schedule.T))
    planned = 0
    for nfe in LADDER:
        try:
            plan = solver.plan(model.schedule, nfe)
        except (BelowMinimumNFE, FixedNFE):
            continue
        except solvers.SpecError as e:   # a consistency grid has fewer points than this NFE
            assert "exceeds" in str(e)
            continue
        d = Denoiser(model, budget=None if solver.adaptive else nfe)
        with torch.no_grad():
            solver.sample(d, x_T, plan)
        if solver.adaptive:
            assert plan.nfe is None
        else:
            assert d.nfe == plan.nfe <= nfe, (nfe, plan)
        planned += 1
    assert planned

"""The model interface every benchmark model implements, and the model registry."""
from __future__ import annotations

from typing import Callable

import torch

from solvers.denoiser import Network
from solvers.options import SpecError, closest, coerce_options, parse_spec


class DiffusionModel(Network):
    """A pretrained (or exact) diffusion model behind one interface.

    schedule:  the solvers' NoiseSchedule it was trained with
    prediction: what forward returns: 'eps', 'x0' or 'v'
    shape:     per-sample shape
    num_classes: None when unconditional; class label `num_classes` is the null label (classifier-free guidance)
    reference: the data its samples are scored against (see `Reference`)
    feature_extractor: name of the torch-fidelity feature extractor used for its FID ('data' = the raw data space)
    guidable:  False where classifier-free guidance does not apply although labels do (a consistency model
               distils one guidance scale): runs skip guidance != 1 for it
    weights_sha256: sha256 of the weights it loaded, part of every cell's identity (None: an exact model)

    Optional capabilities, declared here with their defaults (the harness reads them, never probes for them):
    applies_guidance, has_flow_map (solvers.denoiser.Network); fid_reference: the dataset its FID is scored
    against; ode_model: the model whose PF-ODE its trajectories follow (traj_rmse's reference solve);
    integrates: the model each of its calls solves the PF-ODE of (an exact flow map's base);
    activation_bytes_per_sample / activation_bytes_fixed: one call's activations, for bench/memory.py.
    """

    name = "?"
    spec = "?"      # the spec it was loaded from (load_model sets it)
    prediction = "eps"
    shape: tuple = ()
    num_classes: int | None = None
    feature_extractor = "data"
    guidable = True
    weights_sha256: str | None = None
    fid_reference: str | None = None    # the FID reference: a torch-fidelity dataset name (digits) or None
    # bytes of one network call per sample of the batch (at float32; float64 doubles it) and a fixed part;
    # None: bench/memory.py assumes a UNet's DEFAULT_ACTIVATION_FACTOR per sample element
    activation_bytes_per_sample: int | None = None
    activation_bytes_fixed: int = 0
    integrates: "DiffusionModel | None" = None   # each call is a dopri5 solve of this model (memory estimates)
    dtype = torch.float32
    device = "cpu"

    @property
    def ode_model(self) -> "DiffusionModel":
        """The model whose PF-ODE a trajectory from this one follows (traj_rmse's reference): itself, unless a
        flow map or consistency model names the ODE it was made from."""
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Network output at continuous times t (a (N,) float64 tensor; map with schedule.model_time)."""
        raise NotImplementedError

    def __call__(self, x, t, y=None):
        return self.forward(x, t, y)

    def to(self, device):
        self.device = device
        return self

    @property
    def reference(self) -> "Reference":
        raise NotImplementedError


class Reference:
    """What samples are scored against: exact moments and/or reference samples."""

    def __init__(self, samples: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 mean: torch.Tensor | None = None, cov: torch.Tensor | None = None,
                 sampler: Callable | None = None):
        self.samples, self.labels, self.mean, self.cov, self._sampler = samples, labels, mean, cov, sampler

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self._sampler is None:
            raise NotImplementedError("this reference has no exact sampler")
        return self._sampler(n, generator)


_MODELS: dict[str, tuple[Callable, dict, dict, str]] = {}
_RANGES: dict[str, dict] = {}   # model name -> numeric option -> declared range ((lo, hi) closed, or Range)
_ADDED: dict[str, tuple] = {}    # model name -> options added after cells were made (see identity_options)


def register_model(name: str, defaults: dict | None = None, choices: dict | None = None,
                   ranges: dict | None = None, added: tuple = ()):
    """Register a factory `f(**options) -> DiffusionModel`; its docstring's first line is the summary.
    `ranges` declares each numeric option's accepted range (without one: any finite number). `added` names
    options given to an existing model later: at their default they are left out of its identity
    (`identity_options`), so the cells made before them stay valid."""
    def deco(factory):
        summary = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
        _MODELS[name] = (factory, defaults or {}, choices or {}, summary)
        _RANGES[name] = dict(ranges or {})
        _ADDED[name] = tuple(added)
        return factory
    return deco


def list_models() -> dict[str, str]:
    return {name: entry[3] for name, entry in sorted(_MODELS.items())}


def model_options(spec: str) -> tuple[str, dict]:
    """Parse and validate a model spec without building the model."""
    scheme = scheme_of(spec.strip())
    if scheme is not None:
        # <prefix><target>[:key=value,...]: the target itself may hold ':' or '/', options follow the last ':'
        body = spec.strip()[len(scheme):]
        target, sep, rest = body.rpartition(":")
        if not sep or "=" not in rest:
            target, rest = body, ""
        raw = parse_spec(f"{scheme.rstrip(':')}:{rest}", "model")[1] if rest else {}
        _, owner, defaults, ranges = _SCHEMES[scheme]
        checked = {k: v for k, v in raw.items() if k in defaults}
        if checked:   # only checked here: the loader reads the text
            coerce_options(f"{owner} '{target.strip()}'", checked, defaults, None, ranges)
        return scheme + target.strip(), raw
    name, raw = parse_spec(spec, "model")
    if name not in _MODELS:
        raise SpecError(f"unknown model '{name}'; closest registered: {closest(name, _MODELS)}"
                        " (see `nfebench list models`)")
    _, defaults, choices, _ = _MODELS[name]
    return name, coerce_options(f"model '{name}'", raw, defaults, choices, _RANGES.get(name))


def identity_options(name: str, opts: dict) -> dict:
    """A model's resolved options as its cells' identity holds them: an option declared `added` is left out at
    its default (the model computes what it did before the option existed)."""
    if name not in _MODELS:
        return dict(opts)
    defaults = _MODELS[name][1]
    return {k: v for k, v in opts.items() if not (k in _ADDED[name] and v == defaults.get(k))}


_SCHEMES: dict[str, tuple[Callable, str, dict, dict]] = {}   # prefix -> (loader, owner, defaults, ranges)


def register_scheme(prefix: str, loader: Callable, owner: str = "model", defaults: dict | None = None,
                    ranges: dict | None = None):
    """Models named `<prefix><target>[:key=value,...]` (e.g. 'hf:google/ddpm-cifar10-32') are built by
    `loader(target, **opts)` with the options as text; those in `defaults` are type- and range-checked (`ranges`)
    by model_options before loading, errors naming `<owner> '<target>'`. The scheme's module registers itself,
    so this module imports none of them."""
    _SCHEMES[prefix] = (loader, owner, dict(defaults or {}), dict(ranges or {}))


def scheme_of(name: str) -> str | None:
    """The registered scheme prefix a model name or spec starts with (None: a registered model's name)."""
    return next((s for s in _SCHEMES if name.startswith(s)), None)


def load_model(spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> DiffusionModel:
    name, opts = model_options(spec)
    scheme = scheme_of(name)
    if scheme is not None:
        model = _SCHEMES[scheme][0](name[len(scheme):], **opts)
    else:
        model = _MODELS[name][0](**opts)
    model.name, model.spec = name, spec
    model.dtype = dtype
    return model.to(device)

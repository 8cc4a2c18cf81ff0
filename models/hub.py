"""hf:<repo|dir>: a diffusers UNet2DModel checkpoint with its DDPM (discrete-beta) scheduler config, or a
consistency model's (CMStochasticIterativeScheduler config: see HubConsistencyModel).

Accepted layouts (a local directory, or the snapshot of a Hugging Face Hub repo):
- a pipeline folder: model_index.json (optional), unet/{config.json, diffusion_pytorch_model.safetensors|.bin},
  scheduler/scheduler_config.json (google/ddpm-cifar10-32 and `UNet2DModel.save_pretrained(dir/'unet')`
  + `DDPMScheduler.save_config(dir/'scheduler')`);
- a model folder: config.json + diffusion_pytorch_model.safetensors|.bin + scheduler_config.json.

A local directory never touches the network. A repo id is looked up in the local Hugging Face cache first and
downloaded only when the hub is reachable and HF_HUB_OFFLINE is not set.

The scheduler's betas (linear / scaled_linear / squaredcos_cap_v2 / sigmoid, or trained_betas) become a
float64 `VPDiscrete`; the network receives the fractional training-step index `schedule.model_time(t)`.
Options (`hf:DIR:key=value,...`): revision (hub), reference (torch-fidelity dataset its FID is scored
against, e.g. cifar10-train; default cifar10-train for repos named *cifar10*), num_classes (class-conditional
checkpoints: the number of real classes; label `num_classes` is then the null label of classifier-free guidance).

A flow-matching checkpoint (scheduler/scheduler_config.json of a FlowMatchEulerDiscreteScheduler or
FlowMatchHeunDiscreteScheduler) runs on the rectified-flow schedule x_t = (1 - t) x0 + t eps with the flow
velocity v = eps - x0 as prediction; the network receives num_train_timesteps * t (see HubFlowUNet).

A checkpoint folder may carry nfebench's sidecar `nfebench.json` (`write_sidecar`; diffusers' config loaders
drop keys they do not know, so this cannot live in config.json): the number of real classes (a class-conditional
UNet trained with label dropout has one class embedding more, the null label), the FID feature extractor and
reference (mnist-unet: the MNIST classifier and the 5,000 MNIST images), and the sha256 of every checkpoint file,
checked on load. The `num_classes` and `reference` options override it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch

from solvers.options import SpecError
from solvers.denoiser import bcast
from solvers.schedules import VE, VPDiscrete

from .base import DiffusionModel, Reference, register_scheme
from .consistency_scalings import boundary_scalings
from .weights_store import WEIGHTS_DIR, sha256_of

F64 = torch.float64
INSTALL_HINT = "install the 'hub' extra: pip install -e '.[hub]'"
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
OPTIONS = ("revision", "reference", "num_classes")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_CONFIG_PATTERNS = ["model_index.json", "config.json", "scheduler_config.json", "unet/config.json",
                    "scheduler/scheduler_config.json"]
SIDECAR = "nfebench.json"
SIDECAR_KEYS = ("num_classes", "feature_extractor", "reference", "train", "sha256", "training")
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
# FlowMatch* options that change the time grid away from the one a pixel UNet here is sampled on
FLOW_UNSUPPORTED = ("use_dynamic_shifting", "invert_sigmas", "shift_terminal", "use_karras_sigmas",
                    "use_exponential_sigmas", "use_beta_sigmas")


# ----------------------------------------------------------------------------------------------- schedule

def betas_from_config(cfg: dict) -> torch.Tensor:
    """The training betas of a diffusers DDPM-family scheduler config, in float64."""
    trained = cfg.get("trained_betas")
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=F64).reshape(-1)
    else:
        n = int(cfg.get("num_train_timesteps", 1000))
        b0, b1 = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
        kind = cfg.get("beta_schedule", "linear")
        if kind == "linear":
            betas = torch.linspace(b0, b1, n, dtype=F64)
        elif kind == "scaled_linear":
            betas = torch.linspace(math.sqrt(b0), math.sqrt(b1), n, dtype=F64) ** 2
        elif kind == "squaredcos_cap_v2":
            # Nichol & Dhariwal cosine: abar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), beta capped at 0.999
            s = torch.arange(n + 1, dtype=F64) / n
            abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        elif kind == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-6.0, 6.0, n, dtype=F64)) * (b1 - b0) + b0
        else:
            raise SpecError(f"unsupported beta_schedule '{kind}' in the scheduler config; accepted: "
                            + ", ".join(BETA_SCHEDULES) + " or trained_betas")
    if cfg.get("rescale_betas_zero_snr"):
        raise SpecError("schedulers with rescale_betas_zero_snr=true (alpha_T = 0) are not supported")
    if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
        raise SpecError("the scheduler config's betas must lie in (0, 1)")
    return betas


# ----------------------------------------------------------------------------------------------- model

class HubUNet(DiffusionModel):
    """A diffusers UNet2DModel on a VP discrete schedule; data in [-1, 1]."""

    feature_extractor = "inception-v3-compat"
    data_range = (-1.0, 1.0)

    def __init__(self, unet, scheduler_config: dict, source: str, reference: str | None = None,
                 num_classes: int | None = None, feature_extractor: str | None = None):
        cfg = unet.config
        if feature_extractor:   # the sidecar's (a classifier's feature space); else the class's InceptionV3
            self.feature_extractor = feature_extractor
        self.unet = unet.eval().requires_grad_(False)
        self.source = source
        self.scheduler_config = dict(scheduler_config)
        self._set_schedule(self.scheduler_config)
        size = cfg.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.in_channels = int(cfg.in_channels)
        self.shape = (self.in_channels, int(h), int(w))
        # learned-variance checkpoints (out_channels = 2 C) put the mean prediction in the first C channels
        self._out_channels = self.in_channels
        self.num_class_embeds = cfg.num_class_embeds if cfg.class_embed_type is None else None
        if self.num_class_embeds is None:
            self.num_classes = None
        else:
            self.num_classes = int(num_classes) if num_classes is not None else int(self.num_class_embeds)
            if not 1 <= self.num_classes <= self.num_class_embeds:
                raise SpecError(f"num_classes={self.num_classes} does not fit the checkpoint's "
                                f"{self.num_class_embeds} class embeddings")
        self.fid_reference = reference or None
        self._placed = None  # (device, dtype) the UNet currently sits on

    def _place(self):
        want = (str(self.device), self.dtype)
        if self._placed != want:
            # nn.Module.to: diffusers' ModelMixin.to warns on every dtype cast (even with no fp32-only modules)
            torch.nn.Module.to(self.unet, device=self.device, dtype=self.dtype)
            self._placed = want

    def to(self, device):
        self.device = device
        self._place()
        return self

    def _set_schedule(self, cfg: dict):
        kind = cfg.get("prediction_type", "epsilon")
        if kind not in PREDICTIONS:
            raise SpecError(f"unsupported prediction_type '{kind}' in the scheduler config; accepted: "
                            + ", ".join(PREDICTIONS))
        self.prediction = PREDICTIONS[kind]
        self.schedule = VPDiscrete(betas=betas_from_config(cfg))

    def forward(self, x, t, y=None):
        t = _per_sample(t, x.shape[0])
        steps = self.schedule.model_time(t.cpu()).to(device=self.device, dtype=torch.float32)
        return self._net(x, steps, y)

    def _net(self, x, steps, y):
        """The UNet at network time `steps` (per sample, on the device), output in x's device and dtype."""
        self._place()
        labels = None
        if self.num_class_embeds is not None:
            if y is None:
                raise ValueError(f"{self.source} is class-conditional: forward needs class labels y")
            labels = torch.as_tensor(y).to(device=self.device, dtype=torch.long)
            if labels.numel() and int(labels.max()) >= self.num_class_embeds:
                raise ValueError(f"class label {int(labels.max())} out of range for {self.num_class_embeds} class "
                                 "embeddings (no null label for classifier-free guidance: pass num_classes=K "
                                 "when label K is the checkpoint's null class)")
        out = self.unet(x.to(device=self.device, dtype=self.dtype), steps, class_labels=labels,
                        return_dict=False)[0]
        return out[:, :self._out_channels].to(device=x.device, dtype=x.dtype)

    @property
    def reference(self):
        return Reference()  # image models are scored against a torch-fidelity dataset or --fid-stats


def _per_sample(t, n: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=F64)
    return t.expand(n) if t.dim() == 0 else t


class HubConsistencyModel(HubUNet):
    """A consistency checkpoint (UNet2DModel + CMStochasticIterativeScheduler config, e.g. the openai/diffusers-cd_*
    conversions): VE schedule t = sigma in [sigma_min, sigma_max]; forward is the consistency function
        f(x, sigma) = c_skip x + c_out F(c_in x, 250 log(sigma + 1e-44)),  clamped to [-1, 1] (clip_denoised)
    with the boundary-condition scalings c_skip = s_d^2 / ((sigma - sigma_min)^2 + s_d^2),
    c_out = (sigma - sigma_min) s_d / sqrt(sigma^2 + s_d^2), c_in = 1 / sqrt(sigma^2 + s_d^2) (CM paper app. C),
    so prediction = x0. The schedule carries the scheduler's Karras index grid (N = num_train_timesteps, rho) for
    cm-multistep's timesteps."""

    guidable = False

    def _set_schedule(self, cfg: dict):
        try:
            self.sigma_data = float(cfg.get("sigma_data", 0.5))
            smin, smax = float(cfg.get("sigma_min", 0.002)), float(cfg.get("sigma_max", 80.0))
            steps, rho = int(cfg.get("num_train_timesteps", 40)), float(cfg.get("rho", 7.0))
        except (TypeError, ValueError) as e:
            raise SpecError(f"bad CMStochasticIterativeScheduler config: {e}") from None
        self.clip_denoised = bool(cfg.get("clip_denoised", True))
        self.prediction = "x0"
        self.schedule = VE(sigma_min=smin, sigma_max=smax)
        self.schedule.consistency_steps, self.schedule.rho = steps, rho

    def forward(self, x, t, y=None):
        sigma = _per_sample(t, x.shape[0]).to(x.device)
        sd = self.sigma_data
        c_skip, c_out = boundary_scalings(sigma, self.schedule.t_min, sd)
        c_in = 1 / torch.sqrt(sigma ** 2 + sd ** 2)
        steps = (250.0 * torch.log(sigma + 1e-44)).to(device=self.device, dtype=torch.float32)
        out = self._net(bcast(c_in, x) * x, steps, y)
        f = bcast(c_skip, x) * x + bcast(c_out, x) * out
        return f.clamp(-1, 1) if self.clip_denoised else f


class HubFlowUNet(HubUNet):
    """A flow-matching checkpoint (UNet2DModel + FlowMatchEulerDiscreteScheduler or FlowMatchHeunDiscreteScheduler
    config, as SD3's trainer writes): x_t = (1 - t) x0 + t eps, t in [0, 1] (diffusers' `sigma`), on the
    rectified-flow schedule; the network predicts the flow velocity v = eps - x0 = dx/dt at network time
    num_train_timesteps * t (a float, never truncated, as the FlowMatch pipelines pass it). Config options that
    move the time grid (dynamic shifting, inverted sigmas, a terminal stretch, karras/exponential/beta sigmas) are
    refused, and so is a `shift` other than 1: nfebench's grids take the shift per solver (`ddim:shift=3`)."""

    def _set_schedule(self, cfg: dict):
        from solvers.schedules import SCHEDULES

        name = cfg.get("_class_name")
        on = [k for k in FLOW_UNSUPPORTED if cfg.get(k) not in (None, False)]
        if on:
            raise SpecError(f"{self.source}: {name} with {on[0]}={cfg[on[0]]} is not supported (a flow "
                            "checkpoint here is sampled on nfebench's rectified-flow grids)")
        try:
            steps, shift = int(cfg.get("num_train_timesteps", 1000)), float(cfg.get("shift", 1.0))
        except (TypeError, ValueError) as e:
            raise SpecError(f"bad {name} config: {e}") from None
        if shift != 1.0:
            raise SpecError(f"{self.source}: {name} with shift={shift:g} is not supported as the model's default; "
                            f"nfebench's grids take the shift per solver (e.g. ddim:shift={shift:g}) on a shift 1.0 "
                            "config")
        self.schedule = SCHEDULES["rectified-flow"](num_train_timesteps=steps)   # model_time(t) = steps * t
        self.prediction = "flow"


# ----------------------------------------------------------------------------------------------- loading

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read {path}: {e}") from None


def _layout(root: Path) -> tuple[str | None, Path] | None:
    """(unet subfolder or None, scheduler config path) when root holds a loadable checkpoint."""
    for sub in ("unet", None):
        d = root / sub if sub else root
        if (d / "config.json").is_file():
            for sched in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json"):
                if sched.is_file():
                    return sub, sched
            raise SpecError(f"{root} has a UNet config but no scheduler config "
                            "(expected scheduler/scheduler_config.json or scheduler_config.json)")
    return None


def _has_weights(root: Path, sub: str | None) -> bool:
    d = root / sub if sub else root
    return any((d / f).is_file() for f in WEIGHT_FILES)


def _checkpoint_sha256(root: Path, sub: str | None, sched_path: Path) -> str:
    """One sha256 over the UNet's weights and config, the scheduler config and the sidecar: what the model
    computes with (and is scored against)."""
    d = root / sub if sub else root
    h = hashlib.sha256()
    for f in [*(d / w for w in WEIGHT_FILES), d / "config.json", Path(sched_path), root / SIDECAR]:
        if f.is_file():
            h.update(f"{f.name}:{sha256_of(f)}\n".encode())
    return h.hexdigest()


def _checkpoint_files(root: Path) -> list[str]:
    """The files of the checkpoint in root, relative to it (those the sidecar records the sha256 of)."""
    lay = _layout(root)
    if lay is None:
        raise SpecError(f"{root} holds no diffusers checkpoint (expected unet/config.json or config.json)")
    sub, sched = lay
    d = root / sub if sub else root
    files = [root / "model_index.json", d / "config.json", *(d / w for w in WEIGHT_FILES), sched]
    return sorted(f.relative_to(root).as_posix() for f in files if f.is_file())


def write_sidecar(root: str | Path, *, train: str | None = None, num_classes: int | None = None,
                  feature_extractor: str | None = None, reference: str | None = None,
                  training: dict | None = None) -> Path:
    """Write root/nfebench.json: what nfebench reads beyond diffusers' configs (the real class count, the FID
    feature extractor and reference, the trainer that recreates it: `nfebench train <train>`), the sha256 of
    every checkpoint file, and the training settings (a record only)."""
    root = Path(root)
    info = {"num_classes": num_classes, "feature_extractor": feature_extractor, "reference": reference,
            "train": train, "sha256": {f: sha256_of(root / f) for f in _checkpoint_files(root)},
            "training": dict(training or {})}
    path = root / SIDECAR
    tmp = path.with_name(SIDECAR + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_sidecar(root: Path) -> dict:
    """root/nfebench.json checked ({} without one): known keys of the right types, every recorded file present
    with its recorded sha256. Each problem is one SpecError line naming the file and how to recreate it."""
    path = root / SIDECAR
    if not path.is_file():
        return {}
    info = _read_json(path)
    if not isinstance(info, dict) or any(k not in SIDECAR_KEYS for k in info):
        bad = next((k for k in info if k not in SIDECAR_KEYS), None) if isinstance(info, dict) else None
        raise SpecError(f"{path}: " + (f"unknown key '{bad}'" if bad else "not a JSON object")
                        + "; accepted keys: " + ", ".join(SIDECAR_KEYS))
    k = info.get("num_classes")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise SpecError(f"{path}: num_classes must be a positive integer or null, got {k!r}")
    for key in ("feature_extractor", "reference", "train"):
        if info.get(key) is not None and not isinstance(info[key], str):
            raise SpecError(f"{path}: {key} must be a string or null, got {info[key]!r}")
    sums = info.get("sha256") or {}
    if not isinstance(sums, dict):
        raise SpecError(f"{path}: sha256 must map file names to their sha256")
    how = _recreate_hint(root, info.get("train"))
    for name, want in sorted(sums.items()):
        f = root / name
        if not f.is_file():
            raise SpecError(f"checkpoint file {f} is missing (listed in {path}); {how}")
        got = sha256_of(f)
        if got != want:
            raise SpecError(f"checkpoint file {f} is corrupt: sha256 {got[:16]}... != recorded {str(want)[:16]}... "
                            f"in {path}; {how}")
    return info


def _recreate_hint(root: Path, train: str | None) -> str:
    if not train:
        return "restore the checkpoint's files"
    cmd = f"nfebench train {train}"
    if root.resolve() != (WEIGHTS_DIR / train).resolve():
        cmd += f" --out {root}"
    return f"recreate it with `{cmd}`"


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve(target: str, revision: str | None) -> Path:
    """A local directory, or the cached / downloaded snapshot of a hub repo (the network only when allowed)."""
    p = Path(target).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise SpecError(f"hub checkpoint '{target}' is a file; expected a checkpoint directory or a hub repo id")
    if target.startswith((".", "/", "~", "\\")) or p.is_absolute():
        raise SpecError(f"hub checkpoint '{target}' not found: no such directory")
    if not _REPO_ID.match(target):
        raise SpecError(f"hub checkpoint '{target}' not found: not a local directory nor a hub repo id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SpecError(f"'{target}' is not a local directory and huggingface_hub is missing; {INSTALL_HINT}") from None

    def fetch(patterns, local_only):
        return Path(snapshot_download(target, revision=revision, allow_patterns=patterns,
                                      local_files_only=local_only))

    weights = [f"{s}{w}" for s in ("", "unet/") for w in WEIGHT_FILES]
    try:  # the local Hugging Face cache first: no network
        root = fetch(_CONFIG_PATTERNS + weights, True)
        lay = _layout(root)
        if lay is not None and _has_weights(root, lay[0]):
            return root
    except SpecError:
        raise
    except Exception:
        pass
    if _hub_offline():
        raise SpecError(f"hub checkpoint '{target}' not found: not a local directory, and as a hub repo id it is "
                        "not in the local Hugging Face cache while the hub is offline (HF_HUB_OFFLINE)")
    try:
        root = fetch(_CONFIG_PATTERNS, False)
        lay = _layout(root)
        if lay is None:
            raise SpecError(f"hub repo '{target}' holds no UNet2DModel checkpoint (no config.json or unet/config.json)")
        _check_checkpoint(root, lay[0])
        prefix = f"{lay[0]}/" if lay[0] else ""
        root = fetch([prefix + WEIGHT_FILES[0]], False)  # safetensors when the repo has them, else .bin
        if not _has_weights(root, lay[0]):
            root = fetch([prefix + WEIGHT_FILES[1]], False)
        return root
    except SpecError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"hub checkpoint '{target}' not found: not a local directory, and fetching it from the "
                        f"Hugging Face Hub failed ({type(e).__name__}: {msg})") from None


def _check_checkpoint(root: Path, sub: str | None):
    index = root / "model_index.json"
    if index.is_file():
        info = _read_json(index)
        for latent in ("vqvae", "vae"):
            if latent in info:
                raise SpecError(f"{root} is a latent-diffusion pipeline ({latent}); only pixel-space "
                                "UNet2DModel checkpoints are supported")
        entry = info.get("unet")
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] != "UNet2DModel":
            raise SpecError(f"{root}: the pipeline's unet is a {entry[1]}, not a UNet2DModel")
    cfg = _read_json((root / sub if sub else root) / "config.json")
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise SpecError(f"{root}: the checkpoint is a {cls}, not a UNet2DModel")
    if cfg.get("time_embedding_type", "positional") != "positional":
        raise SpecError(f"{root}: time_embedding_type '{cfg['time_embedding_type']}' is not supported "
                        "(needs positional timestep embeddings of the training-step index)")
    if cfg.get("class_embed_type") is not None:
        raise SpecError(f"{root}: class_embed_type '{cfg['class_embed_type']}' is not supported "
                        "(class-conditional checkpoints need num_class_embeds)")
    return cfg


def load_hub_model(repo_or_dir: str, **opts) -> HubUNet:
    """Load `hf:<repo|dir>[:revision=..,reference=..,num_classes=..]` as a DiffusionModel."""
    bad = [k for k in opts if k not in OPTIONS]
    if bad:
        raise SpecError(f"unknown option '{bad[0]}' for hub model '{repo_or_dir}'; accepted options: "
                        + ", ".join(OPTIONS))
    target = str(repo_or_dir).strip()
    if not target:
        raise SpecError("hf: needs a hub repo id or a local directory (hf:google/ddpm-cifar10-32, hf:path/to/dir)")
    num_classes = opts.get("num_classes")
    if num_classes is not None:
        try:
            num_classes = int(str(num_classes))
        except ValueError:
            raise SpecError(f"option num_classes={num_classes} for hub model '{target}' is not valid: "
                            "expected int") from None
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise SpecError(f"hub model '{target}' needs diffusers; {INSTALL_HINT}") from None

    root = _resolve(target, opts.get("revision"))
    lay = _layout(root)
    if lay is None:
        raise SpecError(f"{root} holds no diffusers checkpoint (expected unet/config.json or config.json)")
    sub, sched_path = lay
    _check_checkpoint(root, sub)
    if not _has_weights(root, sub):
        raise SpecError(f"{(root / sub) if sub else root} has no weights ({' or '.join(WEIGHT_FILES)})")
    sched = _read_json(sched_path)
    consistency = sched.get("_class_name") == "CMStochasticIterativeScheduler"
    flow = sched.get("_class_name") in FLOW_SCHEDULERS
    if not (consistency or flow) and not any(k in sched for k in ("beta_schedule", "trained_betas", "beta_start")):
        raise SpecError(f"{sched_path}: scheduler {sched.get('_class_name', '?')} is not a discrete-beta "
                        "(DDPM-family) scheduler, a CMStochasticIterativeScheduler (consistency model) nor a "
                        "FlowMatchEuler/HeunDiscreteScheduler (flow matching)")
    side = read_sidecar(root)   # before the weights are read: a damaged file is named by its checksum
    try:
        unet = UNet2DModel.from_pretrained(str(root), subfolder=sub, local_files_only=True,
                                           low_cpu_mem_usage=False)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"cannot load the UNet2DModel in {root}: {msg}") from None
    if unet.config.out_channels not in (unet.config.in_channels, 2 * unet.config.in_channels):
        raise SpecError(f"{root}: out_channels {unet.config.out_channels} does not match in_channels "
                        f"{unet.config.in_channels} (or twice it, for learned variance)")
    embeds = unet.config.num_class_embeds if unet.config.class_embed_type is None else None
    if "num_classes" in side and (side["num_classes"] is None) != (embeds is None):
        raise SpecError(f"{root / SIDECAR}: num_classes {side['num_classes']} does not fit a UNet with "
                        f"num_class_embeds {embeds}")
    if num_classes is None:
        num_classes = side.get("num_classes")
    extractor, reference = _scoring(root, side, opts.get("reference"), target, unet.config)
    cls = HubConsistencyModel if consistency else HubFlowUNet if flow else HubUNet
    model = cls(unet, sched, target, reference=reference, num_classes=num_classes, feature_extractor=extractor)
    model.weights_sha256 = _checkpoint_sha256(root, sub, sched_path)
    return model


def _scoring(root: Path, side: dict, reference: str | None, target: str, cfg) -> tuple[str | None, str | None]:
    """(feature extractor, FID reference): the sidecar's classifier feature space, whose reference is its data
    set; else InceptionV3 (None) against the `reference` option (default cifar10-train for repos named *cifar10*)."""
    from .classifier import CLASSIFIERS

    extractor = side.get("feature_extractor")
    reference = reference or side.get("reference")
    if extractor in (None, HubUNet.feature_extractor):
        if reference is None and "cifar10" in target.lower() and "cifar100" not in target.lower():
            reference = "cifar10-train"
        return None, reference
    if extractor not in CLASSIFIERS:
        raise SpecError(f"{root / SIDECAR}: unknown feature_extractor '{extractor}'; accepted: "
                        + ", ".join([HubUNet.feature_extractor, *CLASSIFIERS]))
    space = CLASSIFIERS[extractor]
    size = cfg.sample_size
    shape = (int(cfg.in_channels), *((size, size) if isinstance(size, int) else tuple(size)))
    if shape != space.shape:
        raise SpecError(f"{root / SIDECAR}: feature_extractor {extractor} scores {space.shape} images, the UNet "
                        f"makes {shape}")
    if reference not in (None, space.dataset):
        raise SpecError(f"hub model '{target}' is scored by {extractor} against '{space.dataset}'; "
                        f"reference={reference} is not accepted")
    return extractor, space.dataset


register_scheme("hf:", load_hub_model, "hub model", defaults={"num_classes": 0},
                ranges={"num_classes": (1, 100_000)})   # the number of real classes, checked before loading

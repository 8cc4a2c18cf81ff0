"""digits-oracle: the exact optimal denoiser of the empirical digits distribution (no network, no training).

For the empirical distribution p(x0) = 1/M sum_i delta(x0 - x_i) over the 1,797 digits images (model space),
E[x0 | x_t] = sum_i w_i x_i with w = softmax_i(-||x_t - alpha x_i||^2 / (2 sigma^2)). Class-conditional: given
a label y the sum runs over that class's images only; the null label (10) or y=None uses all images. Computed
in float64 with log-sum-exp (the softmax), batched as one matrix product, so 2,000 samples x 1,797 images is a
few milliseconds. Same schedule as `digits` (DDPM linear betas) by default, or any other (option schedule=: the
formula holds for any alpha and sigma, rectified-flow included), prediction 'x0'. Its probability-flow ODE
maps noise onto training images, so exact solvers reproduce the data (memorisation) and every deviation is
the solver's.
"""
from __future__ import annotations

import torch

from solvers.schedules import SCHEDULES

from .base import DiffusionModel, Reference, register_model
from .digits_data import NUM_CLASSES, SHAPE, load_digits_tensors

F64 = torch.float64


class DigitsOracle(DiffusionModel):
    shape = SHAPE
    num_classes = NUM_CLASSES
    prediction = "x0"
    feature_extractor = "digits-classifier"
    fid_reference = "digits"
    # one call's activations (measured, ~1.5-2x above): per sample, and the logits over the 1,797 images,
    # 4,096 rows a block
    activation_bytes_per_sample, activation_bytes_fixed = 6_144, 4_096 * 1_797 * 8 * 5

    def __init__(self, batch_size: int = 4096, schedule: str = "vp-discrete"):
        self.schedule = SCHEDULES[schedule]()
        x, y = load_digits_tensors(F64)
        self.images = x.reshape(x.shape[0], -1)             # (M, 64) float64
        self.labels = y
        self.sqnorm = (self.images ** 2).sum(1)             # (M,)
        self.batch_size = batch_size

    def to(self, device):
        self.device = device
        self.images, self.labels, self.sqnorm = (v.to(device) for v in (self.images, self.labels, self.sqnorm))
        return self

    def log_weights(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log posterior weights (N, M) of the training images given x_t (float64)."""
        logits = self._logits(x, t, self.images, self.sqnorm)
        if y is not None:
            y = torch.as_tensor(y, dtype=torch.long).to(logits.device)
            cond = y < NUM_CLASSES
            mask = cond[:, None] & (self.labels[None] != y[:, None])
            logits = logits.masked_fill(mask, float("-inf"))
        return logits

    def _logits(self, x, t, images, sqnorm):
        xf = x.reshape(x.shape[0], -1).to(images.device, F64)
        t = torch.as_tensor(t, dtype=F64).cpu()   # the schedule's knots live on the CPU
        t = t.expand(xf.shape[0]) if t.dim() == 0 else t
        a = self.schedule.alpha(t).to(xf.device)[:, None]
        s2 = self.schedule.sigma(t).to(xf.device)[:, None] ** 2
        # -||x - a x_i||^2 / (2 s^2) up to the per-row constant -||x||^2 / (2 s^2)
        return (a * (xf @ images.T) - 0.5 * a ** 2 * sqnorm[None]) / s2

    def posterior_mean(self, x, t, y=None) -> torch.Tensor:
        """E[x0 | x_t = x (, y)] in float64, shape (N, 1, 8, 8).

        Rows with a class label only weigh that class's images (the others have weight exactly 0), so they are
        computed per class, on a tenth of the images; unconditional rows use all of them."""
        n = x.shape[0]
        t = torch.as_tensor(t, dtype=F64)
        t = t.expand(n) if t.dim() == 0 else t
        out = torch.zeros(n, self.images.shape[1], dtype=F64, device=self.images.device)
        y = None if y is None else torch.as_tensor(y, dtype=torch.long).to(self.images.device)
        groups = [(torch.arange(n, device=self.images.device), None)] if y is None else \
            [(torch.nonzero(y == c).flatten(), c) for c in range(NUM_CLASSES)] + \
            [(torch.nonzero(y >= NUM_CLASSES).flatten(), None)]
        for rows, c in groups:
            images = self.images if c is None else self.images[self.labels == c]
            sqnorm = self.sqnorm if c is None else self.sqnorm[self.labels == c]
            for i in range(0, rows.numel(), self.batch_size):
                r = rows[i:i + self.batch_size]
                w = torch.softmax(self._logits(x[r.to(x.device)], t[r.cpu()], images, sqnorm), dim=1)
                out[r] = w @ images
        return out.reshape(n, *SHAPE)

    def forward(self, x, t, y=None):
        return self.posterior_mean(x, t, y).to(device=x.device, dtype=x.dtype)

    @property
    def reference(self) -> Reference:
        x, y = load_digits_tensors()
        return Reference(samples=x, labels=y)


@register_model("digits-oracle", defaults={"schedule": "vp-discrete"}, choices={"schedule": tuple(SCHEDULES)},
                added=("schedule",))
def digits_oracle(schedule="vp-discrete"):
    """Exact optimal (posterior-mean) denoiser of the empirical 8x8 digits set, class-conditional, x0-prediction."""
    return DigitsOracle(schedule=schedule)

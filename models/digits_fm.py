"""digits-fm: a class-conditional rectified-flow (flow-matching) model of scikit-learn's 8x8 handwritten digits.

The `digits` network (models/digits.py: the same residual MLP with FiLM, 2.24 M parameters, 9.0 MB in float32)
trained as SD3 trains its flows (docs/solvers.md#flow-matching): x_t = (1 - t) x0 + t eps, t ~ logit-normal
(sigmoid of N(0, 1)), the plain velocity loss ||v_theta(x_t, t, y) - (eps - x0)||^2 (unit weight: the density of
t does the weighting), class labels dropped to the null label 10 with probability 0.15 for classifier-free
guidance. Schedule `rectified-flow` (t in [1e-3, 0.999]; flow samplers and DDIM may start at t = 1),
prediction `flow` (the velocity eps - x0, from which the Denoiser forms x0 = x_t - t v and eps = x_t + (1 - t) v);
the network sees diffusers' float timestep 1000 t (`schedule.model_time`), the scale its sinusoidal embedding is
tuned for. The EMA weights ship as models/weights/digits-fm.safetensors, sha256-checked on load
(`nfebench train digits-fm` recreates them; models/training.py's train_digits_fm has the recipe and its cost).
Samples are scored as `digits`'s: FID, KID and cond_acc through the digits classifier against the 1,797 images.
"""
from __future__ import annotations

from solvers.schedules import RectifiedFlow

from .base import register_model
from .digits import Digits

WEIGHTS_NAME = "digits-fm"


class DigitsFM(Digits):
    """Velocity model v_theta(x_t, t, y) = E[eps - x0 | x_t, y] of the digits on a rectified flow."""

    prediction = "flow"
    weights_name = WEIGHTS_NAME
    schedule_type = RectifiedFlow


@register_model("digits-fm", defaults={"weights": ""})
def digits_fm(weights=""):
    """Class-conditional rectified-flow (velocity) MLP of sklearn's 8x8 digits, SD3's recipe (options: weights=DIR)."""
    return DigitsFM(weights)

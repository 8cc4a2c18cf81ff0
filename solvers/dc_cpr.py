"""DC-Solver's cascade polynomial regression (Zhao et al. 2024, section 3.4; docs/solvers.md#dc-solver): the
compensation ratios of an unseen (steps, guidance) predicted from ratios searched at others.

With c = guidance / 12, m = steps / 50 and u = i / steps for the ratio rho_i used before step i (i = 1..steps),
rho_i = sum_a P_a u^a (cubic in u), P_a = sum_b q_ab c^(2-b) (quadratic in c), q_ab = sum_e C_abe m^(2-e)
(quadratic in m): 36 coefficients C, linear in them, so least squares over every searched (c, m, u, rho) with
i >= 3 fits them. rho_1 = rho_2 = 1 always (DC needs three evaluations to interpolate).
"""
from __future__ import annotations

import numpy as np

from .options import SpecError

FIRST = 3            # the first ratio the regression predicts (1-based step index)


def features(steps: int, guidance: float) -> np.ndarray:
    """The design rows of steps i = 3..steps: (steps - 2, 36), column a*9 + b*3 + e = u^a c^(2-b) m^(2-e)."""
    c, m = guidance / 12.0, steps / 50.0
    u = np.arange(FIRST, steps + 1) / steps
    cols = [u ** a * c ** (2 - b) * m ** (2 - e) for a in range(4) for b in range(3) for e in range(3)]
    return np.stack(cols, axis=1) if len(u) else np.zeros((0, 36))


def fit(searched: list[tuple[int, float, list[float]]]) -> np.ndarray:
    """The 36 coefficients from searched (steps, guidance, ratios) entries, ratios[i - 1] = rho_i."""
    steps = {s for s, _, _ in searched}
    scales = {g for _, g, _ in searched}
    if len(steps) < 3 or len(scales) < 3:
        raise SpecError(f"ratios=cpr fits a quadratic in the NFE and in the guidance scale: it needs searched ratios "
                        f"at 3 or more NFEs and 3 or more guidance scales, got NFE {sorted(steps)} and guidance "
                        f"{sorted(scales)}")
    A = np.concatenate([features(s, g) for s, g, _ in searched])
    b = np.concatenate([np.asarray(r[FIRST - 1:], dtype=np.float64) for _, _, r in searched])
    coeffs, *_ = np.linalg.lstsq(A, b, rcond=None)
    return coeffs


def predict(coeffs: np.ndarray, steps: int, guidance: float) -> list[float]:
    """rho_1..rho_steps for (steps, guidance)."""
    return [1.0] * min(steps, FIRST - 1) + [float(r) for r in features(steps, guidance) @ coeffs]

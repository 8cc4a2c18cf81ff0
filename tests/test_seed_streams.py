"""Seed addressing (solvers/noise.py): no two random streams of a run coincide, and sample i of seed s gets the
same initial and solver noise whatever the batch size."""
import numpy as np
import pytest
import torch

from bench.calibration import CALIBRATION_SEED
from solvers import register_solver
from solvers.ddim import DDIM
from solvers.denoiser import gaussian_like
from solvers.noise import MAX_BLOCKS, MAX_SEED, NOISE_BLOCK, NoiseStream, x_T_generator_seed, x_T_rows

M = 2 ** 32   # torch's CPU generator keeps the low 32 bits of a seed


def test_initial_noise_generators_are_distinct_over_the_whole_seed_range():
    """(s, b) -> s * 1_000_003 + b mod 2^32 is injective on seeds 0..MAX_SEED and blocks 0..MAX_BLOCKS-1: two pairs
    collide iff d * 1_000_003 = b' - b (mod 2^32) for some seed difference d, which no d reaches."""
    d = np.arange(1, MAX_SEED + 1, dtype=np.int64)
    r = (d * x_T_generator_seed(1, 0)) % M
    assert ((r >= MAX_BLOCKS) & (r <= M - MAX_BLOCKS)).all()
    # the calibration's reserved seed is outside the user range and shares no generator with any (s, b)
    assert CALIBRATION_SEED > MAX_SEED
    cal = x_T_generator_seed(CALIBRATION_SEED, 0) % M
    s = np.arange(0, MAX_SEED + 1, dtype=np.int64)
    gap = (cal - (s * x_T_generator_seed(1, 0)) % M) % M
    assert not ((gap < MAX_BLOCKS) | (gap > M - MAX_BLOCKS)).any()
    # the range is tight where it matters: seeds past it would collide (94489 * 1_000_003 = 2955 mod 2^32)
    assert (94_489 * x_T_generator_seed(1, 0)) % M == 2955


def test_no_two_streams_coincide():
    """First values of the initial-noise, solver-noise and bootstrap streams of seeds 0..40, blocks 0..2, draws
    0..2 (and the calibration's) are pairwise different."""
    firsts = {}

    def add(name, values):
        key = tuple(np.round(np.asarray(values, np.float64)[:4], 12))
        assert key not in firsts, (name, firsts.get(key))
        firsts[key] = name

    for s in list(range(41)) + [MAX_SEED]:
        x = x_T_rows(s, 3 * NOISE_BLOCK, (1,)).reshape(3, NOISE_BLOCK)
        for b in range(3):
            add(("x_T", s, b), x[b].numpy())
            for k in range(3):
                st = NoiseStream(s, start=b * NOISE_BLOCK)
                for _ in range(k + 1):
                    z = st.randn_like(torch.zeros(NOISE_BLOCK, 1, dtype=torch.float64))
                add(("solver", s, b, k), z.flatten().numpy())
        add(("bootstrap", s), np.random.default_rng(s).standard_normal(4))
    add(("calibration",), x_T_rows(CALIBRATION_SEED, 10, (1,)).flatten().numpy())


@register_solver("noise-probe")
class NoiseProbe(DDIM):
    """Returns x_T and records the first noise the runner's generator gives it."""
    seen = []

    def sample(self, denoiser, x_T, plan, generator=None):
        denoiser.predict(x_T, plan.grid[0])
        NoiseProbe.seen.append(gaussian_like(x_T, generator))
        return x_T.clone()


def _probe(tmp_path, samples, batch_size, dtype="float64"):
    from bench.runner import Runner
    from bench.spec import RunConfig
    NoiseProbe.seen = []
    spec = RunConfig(models=["gmm2d"], solvers=["noise-probe"], nfe=[1], samples=samples, batch_size=batch_size,
                   metrics=["fid"], dtype=dtype)
    r = Runner(spec, tmp_path / f"r{batch_size}", log=lambda *a: None)
    r.run()
    return torch.cat(NoiseProbe.seen)


def test_solver_noise_is_not_the_initial_noise_of_later_samples(tmp_path):
    """The issue's case: float64, seed 0, > 1024 samples. The solver noise of samples 0..1023 was bit-equal to the
    initial noise of samples 1024..2047 (both came from generator seed 1)."""
    z = _probe(tmp_path, 2048, 0)
    x_T = x_T_rows(0, 2048, (2,))
    assert not torch.equal(z[:1024], x_T[1024:])
    assert not torch.isclose(z[:1024], x_T[1024:]).any(dim=1).all()
    assert abs(float(torch.corrcoef(torch.stack([z[:1024].flatten(), x_T[1024:].flatten()]))[0, 1])) < 0.1


@pytest.mark.parametrize("batch_size", [100, 1000, 1500])
def test_sample_noise_does_not_depend_on_the_batch_size(tmp_path, batch_size):
    whole = _probe(tmp_path, 2500, 0)
    assert torch.equal(_probe(tmp_path, 2500, batch_size), whole)


def test_a_stochastic_cell_is_the_same_in_any_batch_size(tmp_path):
    from bench.cli import main
    from bench.store import load_results
    rows = []
    for bs in (0, 64):
        out = tmp_path / f"b{bs}"
        assert main(["run", "--models", "gmm2d", "--solvers", "ddim:eta=1", "--nfe", "6", "--samples", "300",
                     "--batch-size", str(bs), "--metrics", "fid", "--dtype", "float64", "-q", "--no-plots",
                     "--out", str(out)]) == 0
        rows.append(load_results(out).iloc[0])
    assert rows[0]["fid"] == pytest.approx(rows[1]["fid"], rel=1e-12, abs=1e-14)

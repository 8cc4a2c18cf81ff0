"""Seed addressing: every random stream of a run is a function of (purpose, seed, sample block, draw) only.

A user seed s (0 <= s <= MAX_SEED) addresses three families of streams, pairwise disjoint:

- initial noise x_T: sample i of seed s is row i % NOISE_BLOCK of block b = i // NOISE_BLOCK, drawn by torch's
  CPU generator seeded with s * 1_000_003 + b (float64). torch's CPU generator keeps only the low 32 bits of a
  seed, so this map is injective only on a bounded range: for s <= MAX_SEED and b < MAX_BLOCKS no two (s, b),
  and no (s, b) and the calibration's reserved seed, share a generator (checked by tests/test_seed_streams.py).
  It is the scheme every committed result was drawn with, kept bit for bit;
- solver noise (stochastic samplers): draw k of sample i of seed s is row i % NOISE_BLOCK of a block drawn from
  numpy's PCG64 seeded with SeedSequence([SOLVER_TAG, s, b, k]): independent of batch size, device and of the
  other families (another generator family, a 128-bit state);
- Brownian-tree nodes (stochastic samplers with `noise_path=tree`): node k of sample i of seed s is row
  i % NOISE_BLOCK of a block drawn from PCG64 seeded with SeedSequence([TREE_TAG, s, b, k]);
- paired-bootstrap resampling of a seed's samples: numpy's default_rng(s) (bench/nfe_changes.py).

A sample's noise never depends on which batch, shard or device draws it.
"""
from __future__ import annotations

import numpy as np
import torch

NOISE_BLOCK = 1024
MAX_SEED = 65_535
MAX_BLOCKS = 9_766                 # 10,000,000 samples a cell
X_T_STRIDE = 1_000_003
SOLVER_TAG = 0x534F4C56            # 'SOLV': solver-noise entropy words never start like a bare seed
TREE_TAG = 0x54524545              # 'TREE': Brownian-tree nodes


def x_T_generator_seed(seed: int, block: int) -> int:
    """The torch CPU generator seed of block `block` of seed `seed`'s initial noise."""
    return seed * X_T_STRIDE + block


def x_T_rows(seed: int, n: int, shape: tuple, start: int = 0) -> torch.Tensor:
    """Rows start..start+n-1 of seed `seed`'s standard normal initial noise, float64, shape (n, *shape): the same
    rows whichever range they are drawn in (a shard draws only the blocks it needs)."""
    first, stop = start // NOISE_BLOCK, start + n
    blocks = []
    for b in range(first, (stop + NOISE_BLOCK - 1) // NOISE_BLOCK):
        g = torch.Generator().manual_seed(x_T_generator_seed(seed, b))
        blocks.append(torch.randn(NOISE_BLOCK, *shape, generator=g, dtype=torch.float64))
    off = start - first * NOISE_BLOCK
    return torch.cat(blocks)[off:off + n] if blocks and n > 0 else torch.zeros(0, *shape, dtype=torch.float64)


def solver_block(seed: int, block: int, draw: int, shape: tuple) -> np.ndarray:
    """Draw `draw` of solver noise for the samples of block `block` of seed `seed`: (NOISE_BLOCK, *shape) float64."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([SOLVER_TAG, seed, block, draw])))
    return rng.standard_normal((NOISE_BLOCK, *shape))


def keyed_rows(tag: int, seed: int, key: int, start: int, n: int, shape: tuple) -> np.ndarray:
    """Rows start..start+n-1 of the standard normal block family (tag, seed, key): (n, *shape) float64, the same
    rows whichever range they are drawn in."""
    first, last = start // NOISE_BLOCK, (start + n - 1) // NOISE_BLOCK
    rows = np.concatenate([np.random.Generator(np.random.PCG64(np.random.SeedSequence([tag, seed, b, key])))
                           .standard_normal((NOISE_BLOCK, *shape)) for b in range(first, last + 1)])
    off = start - first * NOISE_BLOCK
    return rows[off:off + n]


class NoiseStream:
    """The solver noise of samples start .. start + n - 1 of one seed, passed to `Solver.sample` as its generator.

    Each call draws the next standard normal tensor shaped like x (x.shape[0] = n) on x's device and dtype;
    draw k of sample i is the same whatever the batch that holds sample i."""

    def __init__(self, seed: int, start: int = 0):
        self.seed, self.start, self.draws = int(seed), int(start), 0

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        n, shape = x.shape[0], tuple(x.shape[1:])
        first, last = self.start // NOISE_BLOCK, (self.start + n - 1) // NOISE_BLOCK
        rows = np.concatenate([solver_block(self.seed, b, self.draws, shape) for b in range(first, last + 1)])
        self.draws += 1
        off = self.start - first * NOISE_BLOCK
        return torch.from_numpy(rows[off:off + n]).to(device=x.device, dtype=x.dtype)

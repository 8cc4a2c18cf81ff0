"""Sampling throughput of the hub path at google/ddpm-cifar10-32's size, offline: `python benchmarks/hub_gpu_timing.py
[SAMPLES]` on a CUDA machine with the `hub` extra.

The UNet2DModel has that checkpoint's architecture (35.7 M parameters) with random weights, and the InceptionV3
and FID statistics are random stand-ins as in tests/test_hub.py: the FIDs are meaningless, the timings are not.
Prints each cell's sampling time (`wall_s`, as results.csv records it) and the whole command's time.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fe
from diffusers import DDPMScheduler, UNet2DModel


def build(root: Path):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(128, 256, 256, 256),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    print(f"UNet2DModel: {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters")
    unet.save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                  beta_end=0.02).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline",
                                                       "unet": ["diffusers", "UNet2DModel"],
                                                       "scheduler": ["diffusers", "DDPMScheduler"]}))
    cls = fe.FeatureExtractorInceptionV3      # random-init InceptionV3, nothing downloaded
    saved = fe.load_state_dict_from_url, cls.load_state_dict
    fe.load_state_dict_from_url, cls.load_state_dict = (lambda *a, **k: {}), (lambda self, *a, **k: None)
    try:
        torch.save(cls("inception-v3-compat", ["2048"]).state_dict(), root / "inception.pt")
    finally:
        fe.load_state_dict_from_url, cls.load_state_dict = saved
    a = np.random.default_rng(0).standard_normal((2048, 64)) / 8
    np.savez(root / "stats.npz", mu=np.zeros(2048), sigma=a @ a.T + 1e-3 * np.eye(2048))


def main(samples: int):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        for solver, nfe in (("dpmpp-2m", 10), ("ddim", 20)):
            out = root / f"run-{solver}"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bench", "run", "--models", f"hf:{root}", "--solvers", solver,
                            "--nfe", str(nfe), "--samples", str(samples), "--batch-size", "500", "--device", "cuda",
                            "--metrics", "fid", "--fid-stats", str(root / "stats.npz"),
                            "--inception-weights", str(root / "inception.pt"), "--out", str(out), "-q",
                            "--no-plots"], check=True)
            wall = time.perf_counter() - t
            row = pd.read_csv(out / "results.csv").iloc[0]
            print(f"{solver} NFE {nfe}, {samples} samples: sampling {row.wall_s:.1f} s "
                  f"({samples * nfe / row.wall_s:,.0f} samples x NFE / s), whole command {wall:.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)

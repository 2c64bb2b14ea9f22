"""The small BLT the extraction tests share: 4 layers, 1 channel, 32 px, fixed seed.

Layer k is active from step k and readouts start at step 3, so ``timesteps`` >= 4.
"""

from __future__ import annotations

import torch

import blt_models as bm


def small_blt(
    timesteps: int, *, in_chans: int = 1, size: int = 32, seed: int = 0
) -> bm.ClockedModel:
    """A seeded ``blt_bl`` (num_layers=4) in eval mode whose pretrained_cfg says ``size`` px."""
    torch.manual_seed(seed)
    model = bm.create_model("blt_bl", num_layers=4, in_chans=in_chans, timesteps=timesteps).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(input_size=(in_chans, size, size))
    return model

"""Probes with a Swin encoder: token maps are its final grid, embeddings the mean of its tokens."""
import numpy as np

import ace
from ace import probes
from ace.data import phantom

# Two stages at 64 px, window 4: grids 16 and 8 (both with shifted blocks); final grid 8x8.
SWIN_64 = {"preset": "swin_nano", "embed_dim": 24, "depths": [2, 2], "num_heads": [1, 2], "window_size": 4,
           "patch_size": 4, "in_chans": 1, "img_size": 64, "mlp_ratio": 4, "drop_path": 0}


def test_swin_segmentation_linear_and_finetune():
    """Phantom hearts at 64 px: the linear probe runs on the 8x8 final grid, and end-to-end
    fine-tuning through the core's Swin backward beats the head alone (encoder lr 0)."""
    images, cohort = phantom.batch(range(40), size=64)
    hearts = np.stack([p.masks["heart"] for p in cohort])
    train, test = (images[:32], {"heart": hearts[:32]}), (images[32:], {"heart": hearts[32:]})
    enc = ace.Encoder.from_config(SWIN_64, seed=0)
    enc.precision = "fp32"
    assert enc.token_grid == 8 and enc.default_features == "mean"
    linear = probes.segmentation(enc, train, test)
    assert 0 <= linear["dice"]["heart"] <= 1
    before = enc.state_dict()
    settings = dict(epochs=30, batch=8, head_lr=3e-2)
    frozen = probes.segmentation(enc, train, test, mode="finetune", finetune=dict(settings, lr=0.0))
    tuned = probes.segmentation(enc, train, test, mode="finetune", finetune=dict(settings, lr=1e-3))
    assert tuned["dice"]["heart"] > frozen["dice"]["heart"] + 0.05, (frozen["dice"], tuned["dice"])
    assert all(np.array_equal(v, enc.state_dict()[k]) for k, v in before.items())

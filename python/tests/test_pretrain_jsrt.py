"""End to end on real radiographs: 300 ACE steps of vit_nano, batch 8, on JSRT.

The same run as `notebooks/pretrain_curves.py` (which also plots the curves)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ace

JSRT = Path(__file__).resolve().parents[3] / "shared" / "data" / "jsrt" / "images"


@pytest.mark.skipif(not JSRT.is_dir(), reason=f"JSRT data not found at {JSRT}")
def test_ace_on_jsrt_losses_fall_and_matching_rises_above_chance():
    files = sorted(JSRT.glob("*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    steps, batch = 300, 8
    config = ace.PretrainConfig(encoder="vit_nano", batch_size=batch, epochs=1, steps_per_epoch=steps,
                                head_hidden=512, head_prototypes=1024, lr=5e-3)
    trainer = ace.Trainer(config, seed=0)
    rng = np.random.default_rng(0)
    history = [trainer.step(images[rng.choice(len(images), batch, replace=False)]) for _ in range(steps)]

    def mean(key, part):
        return np.mean([h[key] for h in part])

    first, last = history[:25], history[-25:]
    for key in ("loss", "global", "comp", "decomp"):
        assert np.isfinite([h[key] for h in history]).all(), key
        assert mean(key, last) < mean(key, first), (key, mean(key, first), mean(key, last))
    # Chance: one column in 49 composed blocks, one in 784 decomposed sub-tokens.
    assert mean("comp_acc", last) > 3 / 49
    assert mean("decomp_acc", last) > 3 / 784

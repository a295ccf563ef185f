"""End to end on real radiographs: 300 ACE steps of vit_nano, batch 8, on JSRT, in bf16 and
fp32 (same seed) and in fp32 with another seed, which measures the run-to-run noise.

The same run as `notebooks/pretrain_curves.py` (which also plots the curves)."""

import numpy as np
import pytest
from PIL import Image

import ace

from conftest import JSRT_IMAGES as JSRT, needs_jsrt


STEPS, BATCH = 300, 8
RUNS = {"bf16": ("bf16", 0), "fp32": ("fp32", 0), "fp32, seed 1": ("fp32", 1)}
_histories = {}


def history(run):
    """Per-step stats of one run (computed once per test session)."""
    if run not in _histories:
        precision, seed = RUNS[run]
        if precision == "bf16" and not ace.precision_info()["hardware_bf16"]:
            pytest.skip("this CPU has no bf16 products")
        files = sorted(JSRT.glob("*.png"))
        images = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
        config = ace.PretrainConfig(encoder="vit_nano", batch_size=BATCH, epochs=1, steps_per_epoch=STEPS,
                                    head_hidden=512, head_prototypes=1024, lr=5e-3, precision=precision)
        trainer = ace.Trainer(config, seed=seed)
        rng = np.random.default_rng(seed)
        _histories[run] = [trainer.step(images[rng.choice(len(images), BATCH, replace=False)])
                           for _ in range(STEPS)]
    return _histories[run]


def smoothed(run, key, window=50):
    values = np.array([h[key] for h in history(run)])
    return np.convolve(values, np.ones(window) / window, mode="valid")


@needs_jsrt
def test_ace_on_jsrt_losses_fall_and_matching_rises_above_chance():
    steps = history("fp32")

    def mean(key, part):
        return np.mean([h[key] for h in part])

    first, last = steps[:25], steps[-25:]
    for key in ("loss", "global", "comp", "decomp"):
        assert np.isfinite([h[key] for h in steps]).all(), key
        assert mean(key, last) < mean(key, first), (key, mean(key, first), mean(key, last))
    # Chance: one column in 49 composed blocks, one in 784 decomposed sub-tokens.
    assert mean("comp_acc", last) > 3 / 49
    assert mean("decomp_acc", last) > 3 / 784


@needs_jsrt
def test_bf16_run_matches_fp32_within_run_to_run_noise():
    """bf16 against fp32 with the same seed (same data, crops and augmentation), measured
    against the gap between two fp32 runs that differ only in the seed: the loss curves
    (moving averages of 50 steps) and the final local-matching accuracies."""
    for key in ("loss", "global", "comp", "decomp", "comp_acc", "decomp_acc"):
        precision_gap = np.abs(smoothed("bf16", key) - smoothed("fp32", key)).max()
        noise = np.abs(smoothed("fp32, seed 1", key) - smoothed("fp32", key)).max()
        assert precision_gap <= noise, (key, precision_gap, noise)
    for key in ("comp_acc", "decomp_acc"):
        final = {run: np.mean([h[key] for h in history(run)[-50:]]) for run in RUNS}
        assert abs(final["bf16"] - final["fp32"]) <= abs(final["fp32, seed 1"] - final["fp32"]) + 0.01, (key, final)

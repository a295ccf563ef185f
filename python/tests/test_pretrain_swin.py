"""ACE pretraining with a Swin encoder: the final-stage tokens take the patch tokens' part
(no class token), on real radiographs.

swin_nano on 128-px views: patch 4 and three mergings give a 4 x 4 final grid of 32-px
tokens, windows of 4 tile every stage (32, 16, 8, 4 tokens per side), and a fine cell is one
32-px final token (grid of 12 cells over a 384-px image)."""

import json

import numpy as np
import pytest
from PIL import Image

import ace
from ace.config import SWIN_GEOMETRY

from conftest import JSRT_IMAGES as JSRT, needs_jsrt

STEPS, BATCH = 120, 8
NANO = dict(encoder="swin_nano", window_size=4, batch_size=BATCH, epochs=1, steps_per_epoch=STEPS,
            head_hidden=512, head_prototypes=1024, lr=5e-3, precision="fp32",
            grid=dict(input_size=128, fine_cells=4, grid_cells=12, image_size=384, min_overlap=1))


def jsrt_images(count=120):
    files = sorted(JSRT.glob("*.png"))[:count]
    return np.stack([np.asarray(Image.open(f).convert("L").resize((384, 384), Image.BILINEAR)) for f in files])


def batches(images, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [images[rng.choice(len(images), BATCH, replace=False)] for _ in range(steps)]


def test_swin_encoders_take_the_swin_geometry():
    """A Swin run needs no grid settings: the Swin view geometry is laid under what is given,
    and a geometry that does not fit the Swin's 32-px tokens is refused naming the fix."""
    config = ace.PretrainConfig.recipe("paper", encoder="swin_tiny")
    assert config.grid.input_size == SWIN_GEOMETRY["grid"]["input_size"] == 256
    assert config.grid.input_size == config.grid.fine_cells * 32
    assert config.window_size == 8
    # Given grid fields win over the geometry's, field by field.
    config = ace.PretrainConfig.from_dict({"encoder": "swin_nano", "grid": {"min_overlap": 3}})
    assert config.grid.min_overlap == 3 and config.grid.fine_cells == 8
    with pytest.raises(ace.ACEError, match=r"fine_cells x patch size \(14 x 32\).*Swin geometry"):
        ace.Trainer(ace.PretrainConfig(encoder="swin_nano", head_prototypes=64))
    with pytest.raises(ace.ACEError, match="whole number of 7x7 windows"):
        ace.Trainer(ace.PretrainConfig.recipe("paper", encoder="swin_nano", window_size=7))


@needs_jsrt
def test_swin_ace_on_jsrt_matching_rises_well_above_chance():
    images = jsrt_images()
    trainer = ace.Trainer(ace.PretrainConfig.from_dict(NANO), seed=0)
    assert trainer.student.is_swin and trainer.student.token_grid == 4
    history = [trainer.step(b) for b in batches(images, STEPS)]
    for key in ("loss", "global", "comp", "decomp"):
        assert np.isfinite([h[key] for h in history]).all(), key

    def mean(key, part):
        return np.mean([h[key] for h in part])

    first, last = history[:20], history[-20:]
    for key in ("comp", "decomp"):
        assert mean(key, last) < mean(key, first), key
    # Chance: one composed block in 4, one decomposed sub-token in 64.
    assert mean("comp_acc", last) > 2 / 4, mean("comp_acc", last)
    assert mean("decomp_acc", last) > 4 / 64, mean("decomp_acc", last)


@needs_jsrt
def test_swin_run_is_deterministic_and_resumes_bit_exactly(tmp_path):
    """10 + 10 steps through a checkpoint equal 20 steps in one go (stats and every tensor),
    which equal the same 20 steps run again."""
    images = jsrt_images(32)
    data = batches(images, 20, seed=3)
    config = ace.PretrainConfig.from_dict({**NANO, "steps_per_epoch": 20, "drop_path": 0.2})

    def run(steps, trainer=None):
        trainer = trainer or ace.Trainer(config, seed=5)
        done = trainer.steps_done
        return trainer, [trainer.step(b) for b in data[done:done + steps]]

    whole, stats = run(20)
    again, stats_again = run(20)
    assert stats == stats_again
    part, first = run(10)
    part.save(tmp_path / "run.safetensors")
    resumed, second = run(10, ace.Trainer.load(tmp_path / "run.safetensors"))
    assert first + second == stats
    whole.save(tmp_path / "whole.safetensors")
    resumed.save(tmp_path / "resumed.safetensors")
    assert (tmp_path / "whole.safetensors").read_bytes() == (tmp_path / "resumed.safetensors").read_bytes()
    # The run's teacher is a Swin encoder file of the same weights.
    enc = ace.Encoder.load(tmp_path / "whole.safetensors")
    assert enc.is_swin and enc.default_features == "mean"
    np.testing.assert_array_equal(enc.state_dict()["layers.3.blocks.1.attn.relative_position_bias_table"],
                                  whole.teacher.state_dict()["layers.3.blocks.1.attn.relative_position_bias_table"])


def test_swin_dino_baseline_pools_the_mean_of_the_final_tokens():
    """Without a class token the DINO-style baseline embeds each view as the mean of its final
    tokens: the global loss is finite, the local losses are off, and the weights move."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(4, 256, 256), dtype=np.uint8)
    config = ace.PretrainConfig.from_dict({**NANO, "objective": "dino", "losses": ["global"], "batch_size": 4,
                                           "steps_per_epoch": 3})
    trainer = ace.Trainer(config, seed=1)
    before = trainer.student.state_dict()["layers.0.blocks.0.attn.qkv.weight"].copy()
    stats = [trainer.step(images) for _ in range(3)]
    assert all(np.isfinite(s["global"]) and s["comp"] == 0 for s in stats)
    assert not np.array_equal(before, trainer.student.state_dict()["layers.0.blocks.0.attn.qkv.weight"])
    assert json.loads(trainer._native.config_json())["window_size"] == 4


def test_swin_from_the_command_line(tmp_path):
    """`ace pretrain --preset swin_nano` on the phantom (geometry from the Swin defaults, made
    smaller with --set), then `ace embed` of its teacher: mean-pooled embeddings and the 4 x 4
    final token grid."""
    import subprocess
    import sys

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "ace", *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r

    out = tmp_path / "run"
    cli("pretrain", "--preset", "swin_nano", "--steps", "3", "--batch-size", "2", "--out", out,
        "--set", "window_size=4", "--set", "grid.input_size=128", "--set", "grid.fine_cells=4",
        "--set", "grid.grid_cells=12", "--set", "grid.image_size=384", "--set", "head_prototypes=256")
    config = (out / "config.yaml").read_text()
    assert "encoder: swin_nano" in config and "window_size: 4" in config and "min_overlap: 2" in config
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(ace.data.phantom.batch(range(3), size=256)[0]):
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(images / f"{i}.png")
    cli("embed", "--checkpoint", out / "last.safetensors", "--data", images, "--out", tmp_path / "emb.npz",
        "--tokens")
    emb = np.load(tmp_path / "emb.npz")
    assert emb["tokens"].shape == (3, 4, 4, 256)
    # No class token: the image embedding is the mean of the final tokens.
    np.testing.assert_allclose(emb["cls"], emb["tokens"].mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)

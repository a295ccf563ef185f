"""Colour (RGB) end to end: per-channel views and normalization, the field-of-view mask, an
RGB pretraining run on fundus phantoms, colour image reading, and the CLI with --modality fundus."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ace
from ace.config import MODALITIES
from ace.crops import grid_crops
from ace.data import fundus, load_images, read_image
from ace.data.images import ImageStream
from ace.preprocess import apply_fov_mask, fov_mask


def fundus_config(**overrides):
    """The fundus modality's settings on vit_nano at a small grid: 128 px images, 8 cells,
    4x4-token views of 64 px."""
    fields = json.loads(json.dumps(MODALITIES["fundus"]))
    fields.update(encoder="vit_nano", batch_size=4, epochs=1, steps_per_epoch=40, head_hidden=64,
                  head_bottleneck=32, head_prototypes=128, lr=0.02, precision="fp32",
                  grid={"image_size": 128, "grid_cells": 8, "fine_cells": 4, "input_size": 64, "min_overlap": 1})
    fields.update(overrides)
    return ace.PretrainConfig.from_dict(fields)


@pytest.fixture(scope="module")
def eyes():
    return fundus.batch(range(12), size=128)[0]


def test_rgb_embed_sees_the_pixels_training_views_see(eyes):
    """For a colour image and the same box, `Encoder.preprocess` gives, channel by channel,
    the normalized pixels of the grey training view of that channel (the core's resampler per
    channel, each channel with its own mean and std, R G B in order)."""
    config = fundus_config()
    enc = ace.Encoder("vit_nano", in_chans=3, img_size=config.grid.input_size, mean=config.mean, std=config.std)
    image = eyes[3]
    grey = config.to_dict()
    grey.update(in_chans=1, mean=0.5, std=1.0, augment={})
    grey = ace.PretrainConfig.from_dict(grey)
    per_channel = [grid_crops(grey, seed=5, n=4, image=np.ascontiguousarray(image[..., c])) for c in range(3)]
    sides = set()
    for k, crop in enumerate(per_channel[0]):
        for which in ("c1", "c2"):
            x0, y0, x1, y1 = crop[f"{which}_box"]
            sides.add(x1 - x0)
            got = enc.preprocess(image[None, y0:y1, x0:x1])[0]
            for c in range(3):
                view = per_channel[c][k][f"{which}_view"]
                np.testing.assert_array_equal(got[c], (view - np.float32(config.mean[c])) / np.float32(config.std[c]))
    assert max(sides) == 2 * config.grid.input_size      # C2 views are real resizes, not copies


def test_field_of_view_mask_in_the_core_is_the_numpy_one():
    """A run with fov_mask on raw images steps exactly as one without it on images masked by
    `ace.preprocess.apply_fov_mask` (non-square images, content in the corners), and not as one
    on the raw images: the core's mask and NumPy's agree pixel for pixel."""
    rng = np.random.default_rng(4)
    batches = [rng.uniform(0.2, 1, (4, 90, 110, 3)).astype(np.float32) for _ in range(2)]

    def run(fov, masked):
        t = ace.Trainer(fundus_config(fov_mask=fov), seed=2)
        return [t.step(apply_fov_mask(b) if masked else b) for b in batches]

    masked = run(True, False)
    assert masked == run(False, True)
    assert masked != run(False, False)
    m = fov_mask(90, 110)
    assert not m[0, 0] and m[45, 55] and abs(m.mean() - np.pi / 4) < 0.02


def test_rgb_pretraining_on_fundus_phantoms(tmp_path, eyes):
    """vit_nano, in_chans 3, the fundus modality (colour jitter, grayscale, field of view):
    deterministic, bit-exact resume, losses finite, composition matching above chance."""
    config = fundus_config()
    rng = np.random.default_rng(0)
    batches = [eyes[rng.choice(len(eyes), 4, replace=False)] for _ in range(40)]
    a = ace.Trainer(config, seed=7)
    first = [a.step(b) for b in batches[:20]]
    a.save(tmp_path / "run.safetensors")
    rest = [a.step(b) for b in batches[20:]]
    resumed = ace.Trainer.load(tmp_path / "run.safetensors")
    assert resumed.config.mean == pytest.approx(config.mean) and resumed.config.in_chans == 3
    assert [resumed.step(b) for b in batches[20:]] == rest
    b = ace.Trainer(config, seed=7)
    assert [b.step(x) for x in batches[:20]] == first
    history = first + rest
    assert np.isfinite([h["loss"] for h in history]).all()
    # Chance: one column of the (4/2)^2 = 4 composed blocks, one of 4 x 16 decomposed sub-tokens.
    # (Measured: comp 0.47 -> 0.75, decomp 0.02 -> 0.10 over the first and last 10 steps.)
    def mean(key, part):
        return np.mean([h[key] for h in part])
    first10, last10 = history[:10], history[-10:]
    assert mean("comp_acc", last10) > max(2 / 4, mean("comp_acc", first10) + 0.1)
    assert mean("decomp_acc", last10) > max(3 / 64, mean("decomp_acc", first10))
    assert mean("loss", last10) < mean("loss", first10)
    # The teacher embeds colour images with the run's per-channel statistics.
    cls, tokens = resumed.teacher.embed(eyes[:2])
    assert cls.shape == (2, 96) and tokens.shape == (2, 4, 4, 96)


def test_colour_batches_are_checked():
    t = ace.Trainer(fundus_config(), seed=0)
    with pytest.raises(ace.ACEError, match="channels"):
        t.step(np.zeros((4, 64, 64, 2), np.float32))
    with pytest.raises(ace.ACEError, match="in_chans 3"):       # the C ABI checks it too
        t._native.step(np.zeros((4, 1, 64, 64), np.float32))
    with pytest.raises(ace.ACEError, match="one per channel"):
        fundus_config(mean=[0.1, 0.2])
    with pytest.raises(ace.ACEError, match="colour images"):
        ace.Trainer(fundus_config(in_chans=1, mean=0.5, std=0.2), seed=0)
    with pytest.raises(ace.ACEError, match="channel"):
        ace.Trainer(fundus_config(augment={"color_jitter_p": 0}, in_chans=1), seed=0)


def test_colour_images_are_read_as_rgb(tmp_path, eyes):
    fundus.write_folder(tmp_path, 3, size=96, pairs=1)
    path = tmp_path / "images" / "fundus_00001.png"
    rgb = read_image(path, channels=3)
    expected = np.asarray(Image.open(path), np.float32) / 255
    assert rgb.shape == (96, 96, 3)
    np.testing.assert_array_equal(rgb, expected)
    np.testing.assert_allclose(read_image(path), expected @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-6)
    images, paths = load_images(tmp_path / "images", size=64, channels=3)
    assert images.shape == (3, 64, 64, 3) and len(paths) == 3
    assert len(load_images(tmp_path / "pairs", channels=3)[0]) == 2
    stream = ImageStream(tmp_path / "images", 2, 64, channels=3, epochs=1, cache=False)
    batch = next(iter(stream))
    stream.close()
    assert batch.shape == (2, 64, 64, 3)
    a, b, pa, pb = fundus.read_pairs(tmp_path)[0]
    assert a.shape == b.shape == (96, 96, 3) and pa.shape == pb.shape and len(pa) > 0


def ace_cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "ace", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_cli_pretrain_embed_evaluate_fundus(tmp_path):
    folder = fundus.write_folder(tmp_path / "eyes", 8, size=128, pairs=2)
    data = folder / "images"
    out = tmp_path / "run"
    ace_cli("pretrain", "--modality", "fundus", "--data", data, "--preset", "vit_nano", "--steps", "3",
            "--batch-size", "4", "--out", out, "--set", "grid.image_size=128", "grid.grid_cells=8",
            "grid.fine_cells=4", "grid.input_size=64", "grid.min_overlap=1", "head_prototypes=128",
            "head_hidden=64")
    saved = json.loads((out / "config.json").read_text())
    assert saved["in_chans"] == 3 and saved["fov_mask"] and saved["augment"]["color_jitter_p"] == 0.8
    assert saved["mean"] == MODALITIES["fundus"]["mean"]
    ace_cli("embed", "--checkpoint", out / "last.safetensors", "--data", data, "--out", tmp_path / "e.npz")
    embedded = np.load(tmp_path / "e.npz")
    assert embedded["cls"].shape == (8, 96) and np.isfinite(embedded["cls"]).all()
    # The same embedding in Python: the run's encoder on masked RGB images.
    enc = ace.Encoder.load(out / "last.safetensors")
    assert enc.fov_mask and enc.mean == pytest.approx(MODALITIES["fundus"]["mean"])
    images, _ = load_images(data, size=64, channels=3)
    np.testing.assert_allclose(enc.embed(enc.mask_field_of_view(images))[0], embedded["cls"], rtol=1e-5, atol=1e-5)
    r = ace_cli("evaluate", "--checkpoint", out / "last.safetensors", "--data", folder, "--quick",
                "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["pair_correspondence"]
    assert metrics["pairs"] == 2 and metrics["points"] > 0 and np.isfinite(metrics["mean_error"])
    assert "pair correspondence" in r.stdout and (tmp_path / "eval" / "report.md").exists()
    assert "--modality" in ace_cli("pretrain", "--help").stdout


def test_modality_sits_under_the_users_settings():
    from ace.runconfig import RunSettings, check_layer, merge

    settings = RunSettings(merge([check_layer("file", {"modality": "fundus", "augment": {"color_jitter_p": 0.5}}),
                                  check_layer("--set", {"mean": [0.4, 0.2, 0.1]})]))
    cfg = settings.config
    assert cfg.in_chans == 3 and cfg.fov_mask and cfg.std == MODALITIES["fundus"]["std"]
    assert cfg.augment.color_jitter_p == 0.5 and cfg.augment.grayscale_p == 0.2   # groups merge field by field
    assert cfg.mean == [0.4, 0.2, 0.1] and cfg.augment.clahe_p == 0
    plain = RunSettings(merge([check_layer("options", {})])).config
    assert plain.in_chans == 1 and not plain.fov_mask and plain.mean == pytest.approx(0.757)
    with pytest.raises(ace.ACEError, match="modality"):
        check_layer("options", {"modality": "mri"})

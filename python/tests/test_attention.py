"""Attention maps: the core's last-block CLS attention against a NumPy reference computed from
the saved weights, ace.Encoder.attention, and the `ace attention` command."""
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

import ace
from ace.plots import ATTENTION_PANEL
from reference_vit import vit_last_attention

from conftest import run_ace


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    """A vit_nano (64 px) saved to disk whose attention is far from uniform: random init gives
    near-uniform rows (std 0.02 weights), which any wrong index would still match."""
    enc = ace.Encoder("vit_nano", img_size=64, seed=2, precision="fp32")
    rng = np.random.default_rng(0)
    state = enc.state_dict()
    for name in state:
        if name.endswith("qkv.weight"):
            state[name] = rng.normal(0, 0.15, state[name].shape).astype(np.float32)
    enc.load_state_dict(state)
    path = tmp_path_factory.mktemp("attention") / "enc.safetensors"
    enc.save(path)
    return path


def reference(path, x):
    """Row 0 (the class token's query) of the last block's attention, from the file's weights."""
    state = load_file(path)          # timm names, read with the library users would use
    return vit_last_attention(state, x, num_heads=3)[:, :, 0]


@pytest.mark.parametrize("shape", [(3, 1, 64, 64), (2, 1, 48, 96)])   # the second resamples positions
def test_fp32_class_attention_matches_the_numpy_reference(peaked, shape):
    enc = ace.Encoder.load(peaked)
    enc.precision = "fp32"
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ours = enc.forward_attention(x)
    ref = reference(peaked, x)
    tokens = 1 + (shape[2] // 16) * (shape[3] // 16)
    assert ours.shape == ref.shape == (shape[0], 3, tokens)
    assert ref.max() > 0.3 and ref.min() < 0.5 / tokens      # far from uniform: the test can fail
    np.testing.assert_allclose(ours.sum(-1), 1, atol=1e-5)
    # fp32 products and fastExp against float64: 1e-5 relative per probability at most.
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.skipif(not ace.precision_info()["hardware_bf16"], reason="no AVX512-BF16 or AMX on this CPU")
def test_bf16_class_attention_stays_close_to_the_reference(peaked):
    """bf16 operands round q and k to 8 mantissa bits; the logits move by about 1%, the rows by
    about as much in total variation. The bound is 0.1 of the row's total mass."""
    enc = ace.Encoder.load(peaked)
    assert enc.precision == "bf16"
    x = np.random.default_rng(1).standard_normal((3, 1, 64, 64)).astype(np.float32)
    ours, ref = enc.forward_attention(x), reference(peaked, x)
    np.testing.assert_allclose(ours.sum(-1), 1, atol=1e-5)
    tv = 0.5 * np.abs(ours - ref).sum(-1)
    assert 0 < tv.max() < 0.1, tv


def test_attention_maps_are_the_patch_columns_of_the_class_row(peaked):
    enc = ace.Encoder.load(peaked)
    enc.precision = "fp32"
    images = np.random.default_rng(3).random((5, 80, 70))           # resized to 64 px like embed
    maps = enc.attention(images, batch_size=2)
    assert maps.shape == (5, 3, 4, 4) and maps.dtype == np.float32
    probs = enc.forward_attention(enc.preprocess(images))
    np.testing.assert_array_equal(maps, probs[:, :, 1:].reshape(5, 3, 4, 4))
    np.testing.assert_allclose(maps.sum(axis=(2, 3)) + probs[:, :, 0], 1, atol=1e-5)
    # The embedding of the same images is unchanged by having asked for attention.
    cls, _ = enc.embed(images)
    assert np.isfinite(cls).all()


def test_attention_rejects_bad_input(peaked):
    enc = ace.Encoder.load(peaked)
    with pytest.raises(ace.ACEError, match="multiple of the patch size"):
        enc.forward_attention(np.zeros((1, 1, 40, 64), np.float32))
    with pytest.raises(ace.ACEError, match="channels"):
        enc.forward_attention(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ace.ACEError, match="empty batch"):
        enc.attention(np.zeros((0, 64, 64)))
    with pytest.raises(ace.ACEError, match="NaN"):
        enc.forward_attention(np.full((1, 1, 64, 64), np.nan, np.float32))


def test_attention_command_writes_one_readable_figure_per_image(peaked, tmp_path):
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    rng = np.random.default_rng(4)
    for name in ("a/x.png", "b/x.png", "b/y.png"):      # two images named x: two figures
        Image.fromarray((rng.random((96, 96)) * 255).astype(np.uint8)).save(folder / name)
    out = tmp_path / "out"
    result = run_ace("attention", peaked, folder, "--out", out, "--threads", 1, "--precision", "fp32")
    assert "3 heads on 3 images" in result.stdout
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == ["x-2.png", "x.png", "y.png"]
    panel = round(ATTENTION_PANEL * 100)
    for name in figures:
        with Image.open(out / name) as im:
            im.load()
            assert im.size == ((3 + 2) * panel, panel)       # image, 3 heads, mean
            pixels = np.asarray(im.convert("RGB"))
        assert pixels.std() > 10                            # something is drawn
    saved = np.load(out / "attention.npz")
    assert saved["maps"].shape == (3, 3, 4, 4)
    assert [p.split("/")[-2:] for p in saved["paths"]] == [["a", "x.png"], ["b", "x.png"], ["b", "y.png"]]
    enc = ace.Encoder.load(peaked)
    enc.precision = "fp32"
    images, _ = ace.data.load_images(folder, size=64)
    np.testing.assert_allclose(saved["maps"], enc.attention(images), atol=1e-6)


def test_attention_command_reports_a_missing_checkpoint(tmp_path):
    result = run_ace("attention", tmp_path / "none.safetensors", tmp_path, "--out", tmp_path / "o", check=False)
    assert result.returncode == 1
    assert "no checkpoint file" in result.stderr

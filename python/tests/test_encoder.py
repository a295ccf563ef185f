"""ace.Encoder against an independent NumPy reference, checkpoints, and bad input."""
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors import safe_open

import ace
from ace import _native
from reference_vit import vit_forward_features

from conftest import JSRT_IMAGES, needs_jsrt


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def nano():
    return ace.Encoder("vit_nano", img_size=64, seed=1, precision="fp32")


@pytest.mark.parametrize("preset,size,shape", [
    ("vit_nano", 64, (3, 1, 64, 64)),
    ("vit_nano", 64, (2, 1, 48, 96)),      # position embedding resampled, non-square grid
    ("vit_tiny", 224, (2, 1, 224, 224)),
])
def test_forward_matches_numpy_reference(preset, size, shape):
    enc = ace.Encoder(preset, img_size=size, seed=3, precision="fp32")
    x = randn(*shape, seed=4)
    ours = enc.forward_features(x)
    ref = vit_forward_features(enc.state_dict(), x, num_heads=enc.config["num_heads"])
    assert ours.shape == ref.shape == (shape[0], 1 + (shape[2] // 16) * (shape[3] // 16), enc.config["embed_dim"])
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.skipif(not ace.precision_info()["hardware_bf16"], reason="no AVX512-BF16 or AMX on this CPU")
@pytest.mark.parametrize("preset,size", [("vit_nano", 64), ("vit_tiny", 224)])
def test_bf16_forward_stays_within_bf16_rounding_of_the_reference(preset, size):
    """bf16 rounds each product's operands to 8 mantissa bits (relative 2^-9 = 0.2%); over the
    blocks that compounds to about 1% of the output's scale. Measured: vit_nano 0.3-0.5%,
    vit_tiny 0.6-1%; the bound is 2.5%."""
    enc = ace.Encoder(preset, img_size=size, seed=3)
    assert enc.precision == "bf16"          # "auto" on this CPU
    x = randn(2, 1, size, size, seed=4)
    ref = vit_forward_features(enc.state_dict(), x, num_heads=enc.config["num_heads"])
    ours = enc.forward_features(x)
    relative = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert 1e-4 < relative < 2.5e-2, relative    # really bf16, and close
    enc.precision = "fp32"
    np.testing.assert_allclose(enc.forward_features(x), ref, atol=1e-4, rtol=0)


def test_three_channel_encoder_matches_reference():
    enc = ace.Encoder("vit_nano", in_chans=3, img_size=32, seed=5, precision="fp32")
    x = randn(2, 3, 32, 32)
    np.testing.assert_allclose(enc.forward_features(x),
                               vit_forward_features(enc.state_dict(), x, num_heads=3), atol=1e-4)


def test_timm_parameter_names_and_shapes():
    enc = ace.Encoder("vit_tiny")
    sd = enc.state_dict()
    expected = {"cls_token": (1, 1, 192), "pos_embed": (1, 197, 192),
                "patch_embed.proj.weight": (192, 1, 16, 16), "patch_embed.proj.bias": (192,),
                "norm.weight": (192,), "norm.bias": (192,)}
    for i in range(12):
        b = f"blocks.{i}."
        expected.update({b + "norm1.weight": (192,), b + "norm1.bias": (192,),
                         b + "attn.qkv.weight": (576, 192), b + "attn.qkv.bias": (576,),
                         b + "attn.proj.weight": (192, 192), b + "attn.proj.bias": (192,),
                         b + "norm2.weight": (192,), b + "norm2.bias": (192,),
                         b + "mlp.fc1.weight": (768, 192), b + "mlp.fc1.bias": (768,),
                         b + "mlp.fc2.weight": (192, 768), b + "mlp.fc2.bias": (192,)})
    assert {k: v.shape for k, v in sd.items()} == expected
    assert enc.num_params == sum(int(np.prod(s)) for s in expected.values())
    # timm's init: LayerNorm 1/0, zero biases, weights ~ N(0, 0.02).
    assert np.all(sd["blocks.0.norm1.weight"] == 1) and np.all(sd["blocks.0.attn.qkv.bias"] == 0)
    assert 0.017 < sd["blocks.3.mlp.fc1.weight"].std() < 0.023


def test_seeds_are_deterministic():
    a, b, c = (ace.Encoder("vit_nano", seed=s).state_dict() for s in (7, 7, 8))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


def test_save_load_round_trip_is_bit_exact(tmp_path, nano):
    path = tmp_path / "enc.safetensors"
    nano.save(path)
    loaded = ace.Encoder.load(path)
    assert loaded.config == nano.config
    assert loaded.precision == ace.precision_info()["auto"]   # loaded encoders use "auto"
    loaded.precision = nano.precision
    for k, v in nano.state_dict().items():
        assert np.array_equal(v, loaded.state_dict()[k]), k
    x = randn(2, 1, 64, 64)
    assert np.array_equal(nano.forward_features(x), loaded.forward_features(x))
    # Readable by the safetensors package, timm names, config in the metadata.
    tensors = load_file(str(path))
    assert set(tensors) == set(nano.state_dict())
    with safe_open(str(path), "np") as f:
        assert '"preset":"vit_nano"' in f.metadata()["config"].replace(" ", "")
    assert [p.name for p in tmp_path.iterdir()] == ["enc.safetensors"]  # no temp file left


def test_load_state_dict_round_trip(nano):
    other = ace.Encoder("vit_nano", img_size=64, seed=99, precision="fp32")
    other.load_state_dict(nano.state_dict())
    x = randn(1, 1, 64, 64)
    assert np.array_equal(other.forward_features(x), nano.forward_features(x))


def test_embed_shapes_and_dtypes(nano):
    imgs8 = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    cls, tokens = nano.embed(imgs8, batch_size=2)
    assert cls.shape == (5, 96) and tokens.shape == (5, 4, 4, 96)
    assert cls.dtype == tokens.dtype == np.float32
    # The same images as float in [0, 1] and as uint16 give the same embeddings.
    cls_f, _ = nano.embed(imgs8.astype(np.float64) / 255)
    cls_16, _ = nano.embed(imgs8.astype(np.uint16) * 257)
    np.testing.assert_allclose(cls, cls_f, atol=1e-5)
    np.testing.assert_allclose(cls, cls_16, atol=1e-5)
    # Tokens equal forward_features of the preprocessed batch, laid out as (h, w).
    feats = nano.forward_features(nano.preprocess(imgs8))
    np.testing.assert_allclose(tokens.reshape(5, 16, 96), feats[:, 1:], atol=1e-5)
    # RGB images become grayscale; other sizes are resized.
    rgb = np.repeat(imgs8[..., None], 3, axis=-1)
    np.testing.assert_allclose(nano.embed(rgb)[0], cls, atol=1e-4)
    assert nano.embed(np.zeros((2, 100, 130), np.float32))[1].shape == (2, 4, 4, 96)


@pytest.mark.parametrize("bad,message", [
    (randn(2, 64, 64), r"\(B, in_chans, H, W\)"),
    (randn(2, 3, 64, 64), "channels"),
    (randn(0, 1, 64, 64), "empty"),
    (randn(1, 1, 40, 64), "multiple of the patch"),
    (np.full((1, 1, 64, 64), np.nan, np.float32), "NaN"),
    (np.full((1, 1, 64, 64), 1 + 1j), "dtype"),
])
def test_bad_forward_input_raises_and_interpreter_survives(nano, bad, message):
    with pytest.raises(ace.ACEError, match=message):
        nano.forward_features(bad)
    assert nano.forward_features(randn(1, 1, 64, 64)).shape == (1, 17, 96)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((0, 64, 64), np.uint8), "empty"),
    (np.zeros((64, 64), np.uint8), "shape"),
    (np.zeros((2, 64, 64), np.int64), "integer dtype"),
    (np.array([["a"]]), "shape|dtype"),
    (np.full((2, 64, 64), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((2, 64, 64, 2), np.float32), "channels"),
])
def test_bad_embed_input(nano, bad, message):
    with pytest.raises(ace.ACEError, match=message):
        nano.embed(bad)


def test_bad_construction_and_state():
    with pytest.raises(ace.ACEError, match="unknown preset"):
        ace.Encoder("vit_huge")
    with pytest.raises(ace.ACEError, match="in_chans"):
        ace.Encoder("vit_nano", in_chans=2)
    with pytest.raises(ace.ACEError, match="img_size"):
        ace.Encoder("vit_nano", img_size=50)
    enc = ace.Encoder("vit_nano", img_size=32)
    sd = enc.state_dict()
    with pytest.raises(ace.ACEError, match="missing"):
        enc.load_state_dict({k: v for k, v in sd.items() if k != "norm.bias"})
    with pytest.raises(ace.ACEError, match="shape"):
        enc.load_state_dict({**sd, "norm.bias": np.zeros(3, np.float32)})
    with pytest.raises(ace.ACEError, match="NaN"):
        enc.load_state_dict({**sd, "norm.bias": np.full(96, np.nan, np.float32)})


def test_bad_checkpoints(tmp_path, nano):
    good = tmp_path / "good.safetensors"
    nano.save(good)
    data = good.read_bytes()
    cases = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "not_safetensors": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "bad_json": data[:8] + b"{" * (len(data) - 8),
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        with pytest.raises(ace.ACEError):
            ace.Encoder.load(p)
    with pytest.raises(ace.ACEError, match="no checkpoint"):
        ace.Encoder.load(tmp_path / "missing.safetensors")
    # A well-formed file whose tensors do not fit the config it claims.
    from safetensors.numpy import save_file
    sd = nano.state_dict()
    sd["norm.weight"] = np.ones(5, np.float32)
    save_file(sd, str(tmp_path / "shape.safetensors"), metadata={"config": nano._native.config_json()})
    with pytest.raises(ace.ACEError, match="norm.weight"):
        ace.Encoder.load(tmp_path / "shape.safetensors")
    with pytest.raises(ace.ACEError, match="folder"):
        nano.save(tmp_path / "no" / "such" / "dir.safetensors")
    assert nano.forward_features(randn(1, 1, 64, 64)).shape == (1, 17, 96)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (37, 19, 5), (301, 77, 129)])
def test_gemm_against_numpy(m, n, k, ta, tb):
    a = randn(*((k, m) if ta else (m, k)), seed=1)
    b = randn(*((n, k) if tb else (k, n)), seed=2)
    expected = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    np.testing.assert_allclose(_native.gemm(a, b, ta, tb), expected, rtol=1e-4, atol=1e-4)


def test_thread_count_does_not_change_results(nano):
    x = randn(4, 1, 64, 64)
    before = ace.get_num_threads()
    try:
        ace.set_num_threads(1)
        one = nano.forward_features(x)
        ace.set_num_threads(2)
        two = nano.forward_features(x)
    finally:
        ace.set_num_threads(before)
    np.testing.assert_allclose(one, two, atol=1e-5)
    with pytest.raises(ace.ACEError, match="thread count"):
        ace.set_num_threads(0)


def test_gil_is_released_during_forward():
    enc = ace.Encoder("vit_tiny")
    x = randn(8, 1, 224, 224)
    enc.forward_features(x)
    ticks, done = [0], threading.Event()

    def run():
        enc.forward_features(x)
        enc.forward_features(x)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    while not done.is_set():
        ticks[0] += 1
        time.sleep(0.001)
    t.join()
    assert ticks[0] > 20   # the main thread kept running while the core worked


def test_fine_tuning_through_the_core_reduces_a_loss():
    """forward_train -> backward -> adamw_step: regress the mean token onto a target."""
    enc = ace.Encoder("vit_nano", img_size=32, seed=2, drop_path=0.1)
    x = randn(4, 1, 32, 32, seed=3)
    target = randn(96, seed=4)
    losses = []
    for _ in range(15):
        feats = enc.forward_train(x)
        diff = feats[:, 1:].mean(axis=1) - target
        losses.append(float((diff ** 2).mean()))
        grad = np.zeros_like(feats)
        grad[:, 1:] = (2 * diff / diff.size)[:, None, :] / (feats.shape[1] - 1)
        enc.backward(grad)
        enc.adamw_step(1e-3)
    assert losses[-1] < 0.8 * losses[0], losses
    # With lr 0 the weights do not move.
    before = enc.state_dict()
    enc.backward(np.zeros_like(enc.forward_train(x)))
    enc.adamw_step(0.0)
    assert all(np.array_equal(v, enc.state_dict()[k]) for k, v in before.items())


def test_fine_tuning_misuse_raises(nano):
    x = randn(2, 1, 64, 64)
    twin = nano.copy()
    with pytest.raises(ace.ACEError, match="training forward"):
        twin.backward(np.zeros((2, 17, 96), np.float32))
    feats = twin.forward_train(x)
    with pytest.raises(ace.ACEError, match="shape"):
        twin.backward(np.zeros((1, 17, 96), np.float32))
    with pytest.raises(ace.ACEError, match=r"shape \(2, 96, 17\)"):  # the right count, transposed
        twin.backward(np.zeros((2, 96, 17), np.float32))
    with pytest.raises(ace.ACEError, match="NaN"):
        twin.backward(np.full_like(feats, np.nan))
    twin.forward_features(x)              # an inference forward discards the pending backward
    with pytest.raises(ace.ACEError, match="training forward"):
        twin.backward(np.zeros_like(feats))
    with pytest.raises(ace.ACEError, match="lr"):
        twin.adamw_step(-1.0)


@pytest.mark.parametrize("objective, features", [("ace", "mean"), ("dino", "cls")])
def test_training_checkpoint_loads_with_its_normalization_and_features(tmp_path, objective, features):
    """A run trained with its own intensity statistics embeds identically after save/load,
    and records which representation its method trains."""
    config = ace.PretrainConfig(encoder="vit_nano", batch_size=2, mean=0.31, std=0.45, objective=objective,
                                head_hidden=64, head_bottleneck=32, head_prototypes=64, precision="fp32",
                                grid={"image_size": 256})
    trainer = ace.Trainer(config, seed=1)
    images = np.random.default_rng(0).integers(0, 256, (2, 256, 256), dtype=np.uint8)
    trainer.step(images)
    trainer.save(tmp_path / "run.safetensors")
    loaded = ace.Encoder.load(tmp_path / "run.safetensors")
    loaded.save(tmp_path / "encoder.safetensors")          # and again through an encoder file
    reloaded = ace.Encoder.load(tmp_path / "encoder.safetensors")
    cls_a, tokens_a = trainer.teacher.embed(images)
    for enc in (loaded, reloaded):
        assert (enc.mean, enc.std) == (pytest.approx(0.31), pytest.approx(0.45))
        assert enc.default_features == trainer.teacher.default_features == features
        enc.precision = "fp32"
        cls_b, tokens_b = enc.embed(images)
        np.testing.assert_array_equal(cls_a, cls_b)
        np.testing.assert_array_equal(tokens_a, tokens_b)
    # With the JSRT defaults instead, the same weights give other embeddings.
    assert not np.allclose(tokens_b, ace.Encoder._wrap(loaded._native).embed(images)[1])


@needs_jsrt
def test_embed_sees_the_pixels_training_views_see():
    """For the same radiograph and box, `Encoder.preprocess` (inference) produces exactly the
    normalized pixels of the training view: one resampler for both."""
    from PIL import Image

    from ace.crops import grid_crops

    image = np.asarray(Image.open(sorted(JSRT_IMAGES.glob("*.png"))[3]).convert("L"), np.float32) / 255
    config = ace.PretrainConfig(encoder="vit_nano")
    enc = ace.Encoder("vit_nano", img_size=config.grid.input_size, mean=config.mean, std=config.std)
    sides = set()
    for crop in grid_crops(config, seed=5, n=4, image=image):
        for box, view in ((crop["c1_box"], crop["c1_view"]), (crop["c2_box"], crop["c2_view"])):
            x0, y0, x1, y1 = box
            sides.add(x1 - x0)
            np.testing.assert_array_equal(enc.preprocess(image[None, y0:y1, x0:x1])[0, 0],
                                          (view - config.mean) / config.std)
    assert max(sides) == 2 * config.grid.input_size     # C2 views are real resizes, not copies

"""The Swin encoder is timm's SwinTransformer: the same state dict (names and shapes) gives the
same final tokens and pooled embedding, for a small custom Swin with shifted windows in three
stages and for swin_tiny at 224. timm runs in a separate interpreter (PyTorch is never a
dependency); the tests are skipped with a message where it is missing."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import ace
from reference_swin import relative_position_index, shift_mask

TORCH_PYTHON = Path(os.environ.get("ACE_TORCH_PYTHON", "/opt/torchenv/bin/python"))

# Builds timm's SwinTransformer with the given kwargs, gives every parameter (LayerNorms, biases
# and the relative position bias tables included) random values of a useful size, and saves the
# state dict, the model's forward_features and pooled output, and one shifted block's relative
# position index and attention mask.
TIMM_SCRIPT = """
import json, sys
try:
    import numpy as np, torch, timm
    from timm.models.swin_transformer import SwinTransformer
    from safetensors.torch import save_file
except ImportError as e:
    print(e); sys.exit(3)
kwargs, out = json.loads(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
model = SwinTransformer(num_classes=0, **kwargs).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
            p.copy_(1 + 0.2 * torch.randn_like(p))
        elif "relative_position_bias_table" in name:
            p.copy_(torch.randn_like(p))
        elif p.ndim == 1:
            p.copy_(0.1 * torch.randn_like(p))
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out + "/model.safetensors")
x = torch.from_numpy(np.load(out + "/x.npy"))
with torch.no_grad():
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
block = model.layers[0].blocks[1]
np.savez(out + "/timm.npz", features=feats.numpy(), pooled=pooled.numpy(),
         index=block.attn.relative_position_index.numpy(),
         mask=block.attn_mask.numpy() if block.attn_mask is not None else np.zeros(0),
         window=np.array(block.window_size), shift=np.array(block.shift_size))
"""


def run_timm(kwargs, x, tmp_path):
    if not TORCH_PYTHON.exists():
        pytest.skip(f"no PyTorch interpreter at {TORCH_PYTHON} (set ACE_TORCH_PYTHON)")
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([str(TORCH_PYTHON), "-c", TIMM_SCRIPT, json.dumps(kwargs), str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode == 3:
        pytest.skip(f"timm is not installed in {TORCH_PYTHON}: {result.stdout.strip()}")
    assert result.returncode == 0, result.stderr
    return load_file(str(tmp_path / "model.safetensors")), dict(np.load(tmp_path / "timm.npz"))


def ours(config, state):
    enc = ace.Encoder.from_config(config)
    enc.precision = "fp32"
    assert set(enc.state_dict()) == set(state)
    enc.load_state_dict(state)
    return enc


# A small Swin: 64 px input, window 4: stage grids 16, 8, 4 (shifted, with masks), 2 (one window).
SMALL = {"img_size": 64, "patch_size": 4, "in_chans": 1, "embed_dim": 24, "depths": [2, 2, 2, 2],
         "num_heads": [1, 2, 3, 6], "window_size": 4}


def small_config():
    return {"preset": "swin_nano", "embed_dim": 24, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 3, 6],
            "window_size": 4, "patch_size": 4, "in_chans": 1, "img_size": 64, "mlp_ratio": 4, "drop_path": 0}


def test_small_swin_matches_timm(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
    state, ref = run_timm(SMALL, x, tmp_path)
    enc = ours(small_config(), state)
    feats = enc.forward_features(x)
    assert ref["features"].shape == (2, 2, 2, 192)
    np.testing.assert_allclose(feats.reshape(ref["features"].shape), ref["features"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(feats.mean(axis=1), ref["pooled"], atol=1e-4, rtol=1e-4)
    # The weights matter: a different relative position bias in a shifted block changes the
    # output (a constant added to the whole table would not: softmax ignores it).
    state2 = dict(state)
    name = "layers.1.blocks.1.attn.relative_position_bias_table"
    state2[name] = state[name] + np.random.default_rng(5).standard_normal(state[name].shape).astype(np.float32)
    enc.load_state_dict(state2)
    assert np.abs(enc.forward_features(x) - feats).max() > 1e-3


def test_swin_tiny_matches_timm(tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 1, 224, 224)).astype(np.float32)
    kwargs = {"img_size": 224, "patch_size": 4, "in_chans": 1, "embed_dim": 96, "depths": [2, 2, 6, 2],
              "num_heads": [3, 6, 12, 24], "window_size": 7}
    state, ref = run_timm(kwargs, x, tmp_path)
    enc = ace.Encoder("swin_tiny")
    enc.precision = "fp32"
    enc.load_state_dict(state)
    feats = enc.forward_features(x)
    np.testing.assert_allclose(feats.reshape(ref["features"].shape), ref["features"], atol=2e-4, rtol=1e-4)
    tokens = feats.reshape(1, 7, 7, 768)
    np.testing.assert_allclose(tokens.mean(axis=(1, 2)), ref["pooled"], atol=1e-4, rtol=1e-4)


def test_mask_and_index_match_an_independent_construction(tmp_path):
    """timm's buffers of a shifted block against the NumPy reference's construction
    (reference_swin.py, which our forward matches to 1e-4 in test_swin_reference.py)."""
    x = np.zeros((1, 1, 64, 64), np.float32)
    _, ref = run_timm(SMALL, x, tmp_path)
    w, s = int(ref["window"][0]), int(ref["shift"][0])
    assert (w, s) == (4, 2)
    np.testing.assert_array_equal(ref["index"], relative_position_index(w))
    np.testing.assert_array_equal(ref["mask"], shift_mask(16, w, s))


def test_swin_encoder_file_round_trip(tmp_path):
    enc = ace.Encoder.from_config(small_config(), seed=3)
    enc.save(tmp_path / "swin.safetensors")
    back = ace.Encoder.load(tmp_path / "swin.safetensors")
    assert back.config == enc.config and back.default_features == "mean"
    x = np.random.default_rng(2).standard_normal((1, 1, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(back.forward_features(x), enc.forward_features(x))
    images = np.random.default_rng(3).integers(0, 255, (2, 80, 70), dtype=np.uint8)
    pooled, tokens = back.embed(images)
    assert pooled.shape == (2, 192) and tokens.shape == (2, 2, 2, 192)
    np.testing.assert_allclose(pooled, tokens.mean(axis=(1, 2)), atol=1e-5)


def test_swin_refuses_bad_input():
    enc = ace.Encoder.from_config(small_config())
    with pytest.raises(ace.ACEError, match="img_size"):
        enc.forward_features(np.zeros((1, 1, 32, 32), np.float32))
    bad = dict(small_config(), window_size=3)
    with pytest.raises(ace.ACEError, match="window"):
        ace.Encoder.from_config(bad)
    with pytest.raises(ace.ACEError, match="num_heads"):
        ace.Encoder.from_config(dict(small_config(), num_heads=[1, 2]))


def test_ace_embed_with_a_swin_encoder_file(tiny_images, tmp_path):
    """`ace embed` on a Swin encoder file: the pooled embedding under `cls` and the final grid."""
    from conftest import run_ace

    enc = ace.Encoder.from_config(small_config(), seed=4)
    enc.save(tmp_path / "swin.safetensors")
    run_ace("embed", "--checkpoint", tmp_path / "swin.safetensors", "--data", tiny_images,
            "--out", tmp_path / "emb.npz", "--tokens")
    emb = np.load(tmp_path / "emb.npz")
    n = len(emb["paths"])
    assert n > 0 and emb["cls"].shape == (n, 192) and emb["tokens"].shape == (n, 2, 2, 192)
    np.testing.assert_allclose(emb["cls"], emb["tokens"].mean(axis=(1, 2)), atol=1e-5)


def test_swin_preset_with_its_own_window():
    """swin_nano at 256 px with window 8: grids 64, 32, 16 (shifted) and 8 (one window)."""
    enc = ace.Encoder("swin_nano", img_size=256, window_size=8, seed=1)
    assert enc.config["window_size"] == 8 and enc.token_grid == 8
    assert enc.state_dict()["layers.3.blocks.0.attn.relative_position_bias_table"].shape == (15 * 15, 8)
    with pytest.raises(ace.ACEError, match="window"):
        ace.Encoder("swin_nano", img_size=256)            # 256 / 32 = 8 is not a multiple of 7
    with pytest.raises(ace.ACEError, match="Swin presets"):
        ace.Encoder("vit_nano", window_size=8)


def test_swin_bf16_products_stay_close_to_fp32():
    """precision bf16 rounds the linear layers' operands (the window attention stays fp32)."""
    enc = ace.Encoder.from_config(small_config(), seed=5)
    x = np.random.default_rng(6).standard_normal((2, 1, 64, 64)).astype(np.float32)
    enc.precision = "fp32"
    ref = enc.forward_features(x)
    enc.precision = "bf16"
    if enc.precision != "bf16":
        pytest.skip("no bf16 on this machine")
    out = enc.forward_features(x)
    assert 0 < np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_ace_export_of_a_swin_loads_in_timm(tmp_path):
    """`ace export` of a Swin encoder file: both printed timm.create_model lines rebuild the
    encoder in timm, with our final tokens and pooled embedding."""
    from conftest import run_ace
    from test_export import TIMM_SCRIPT as EXPORT_SCRIPT

    if not TORCH_PYTHON.exists():
        pytest.skip(f"no PyTorch interpreter at {TORCH_PYTHON} (set ACE_TORCH_PYTHON)")
    enc = ace.Encoder.from_config(small_config(), seed=7)
    enc.save(tmp_path / "swin.safetensors")
    out = run_ace("export", tmp_path / "swin.safetensors", "--out", tmp_path / "timm")
    commands = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("timm.create_model(")]
    assert len(commands) == 2 and "swin_tiny_patch4_window7_224" in commands[1]
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert config["num_features"] == 192 and config["model_args"]["depths"] == [2, 2, 2, 2]
    x = np.random.default_rng(8).standard_normal((2, 1, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([str(TORCH_PYTHON), "-c", EXPORT_SCRIPT, str(tmp_path / "x.npy"),
                             str(tmp_path / "timm.npz"), *commands], capture_output=True, text=True, timeout=900)
    if result.returncode == 3:
        pytest.skip(f"timm is not installed in {TORCH_PYTHON}")
    assert result.returncode == 0, result.stderr
    got = np.load(tmp_path / "timm.npz")
    enc.precision = "fp32"
    feats = enc.forward_features(x)
    for i in range(2):
        np.testing.assert_allclose(got[f"features{i}"].reshape(feats.shape), feats, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got[f"pooled{i}"], feats.mean(axis=1), atol=1e-4, rtol=1e-4)

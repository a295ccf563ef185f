"""`ace convert`: backbones of PyTorch checkpoints in the authors' layout (Microsoft's Swin,
student/teacher state dicts under `module.backbone.`, DINO heads beside them) and DINO's ViT
layout become our encoders.

The name mapping is checked on our own weights written out in those layouts (no PyTorch
needed); the whole command on a timm SwinTransformer saved by torch.save in the authors'
layout, whose forward_features our converted encoder must reproduce."""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ace
from ace.convert import backbone_state, encoder_from_state

TORCH_PYTHON = Path(os.environ.get("ACE_TORCH_PYTHON", "/opt/torchenv/bin/python"))
# A small 3-channel Swin: 64-px input, window 4, stage grids 16, 8, 4 (shifted, masked) and 2.
SWIN = {"preset": "swin_custom", "img_size": 64, "patch_size": 4, "in_chans": 3, "embed_dim": 24,
        "depths": [2, 2, 2, 2], "num_heads": [1, 2, 3, 6], "window_size": 4, "mlp_ratio": 4, "drop_path": 0.0}


def random_state(enc, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.1, a.shape).astype(np.float32) for name, a in enc.state_dict().items()}


def microsoft_layout(state, masks=True):
    """timm 1.x names -> Microsoft's Swin: stage i's opening merging becomes stage i-1's
    closing one; shifted blocks store their attention mask, every block its index buffer."""
    out = {}
    for name, value in state.items():
        m = re.match(r"^layers\.(\d+)\.downsample\.(.+)$", name)
        out[f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else name] = value
    for i, depth in enumerate(SWIN["depths"]):
        side = (SWIN["img_size"] // SWIN["patch_size"]) >> i
        w = min(SWIN["window_size"], side)
        for j in range(depth):
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = np.zeros((w * w, w * w), np.int64)
            if masks and j % 2 == 1 and side > SWIN["window_size"]:
                out[f"layers.{i}.blocks.{j}.attn_mask"] = np.zeros(((side // w) ** 2, w * w, w * w), np.float32)
    return out


def dino_checkpoint(teacher, student):
    """The layout of the authors' (and DINO's) checkpoints: both networks under
    `module.backbone.`, their heads beside it, and non-tensor entries."""
    def net(state):
        d = {f"module.backbone.{k}": v for k, v in state.items()}
        d["module.head.mlp.0.weight"] = np.ones((8, 4), np.float32)
        d["module.composer.fc1.weight"] = np.ones((4, 4), np.float32)
        return d
    return {"teacher": net(teacher), "student": net(student), "epoch": 7, "args": "namespace"}


def test_authors_swin_layout_maps_to_our_names_and_config():
    enc = ace.Encoder.from_config(SWIN)
    teacher, student = random_state(enc, 1), random_state(enc, 2)
    ckpt = dino_checkpoint(microsoft_layout(teacher), microsoft_layout(student))
    for which, expected in (("teacher", teacher), ("student", student)):
        got = encoder_from_state(backbone_state(ckpt, which))
        assert got.config == {**SWIN, "preset": "swin_custom"}   # img_size read off the stored masks
        state = got.state_dict()
        assert set(state) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(state[name], expected[name], err_msg=name)


def test_preset_shapes_are_named_and_missing_sizes_are_asked_for():
    nano = ace.Encoder("swin_nano", img_size=128, window_size=4)
    state = microsoft_layout(nano.state_dict(), masks=False)
    with pytest.raises(ace.ACEError, match="--img-size"):
        encoder_from_state(state)
    got = encoder_from_state(state, img_size=128)
    assert got.config["preset"] == "swin_nano" and got.config["window_size"] == 4
    with pytest.raises(ace.ACEError, match="absolute position embedding"):
        encoder_from_state({**state, "absolute_pos_embed": np.zeros((1, 4, 32), np.float32)}, img_size=128)
    with pytest.raises(ace.ACEError, match="no patch_embed.proj.weight"):
        encoder_from_state({"fc.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ace.ACEError, match="holds no tensors"):
        backbone_state({"epoch": 3})


def test_dino_vit_layout_maps_to_a_preset():
    vit = ace.Encoder("vit_nano")
    teacher, student = random_state(vit, 3), random_state(vit, 4)
    got = encoder_from_state(backbone_state(dino_checkpoint(teacher, student), "student"))
    assert got.config["preset"] == "vit_nano" and got.config["num_heads"] == 3
    np.testing.assert_array_equal(got.state_dict()["blocks.3.mlp.fc2.weight"], student["blocks.3.mlp.fc2.weight"])
    # A width and depth no preset has: the heads cannot be read off the weights.
    odd = {k: v for k, v in teacher.items() if not k.startswith("blocks.3.")}
    with pytest.raises(ace.ACEError, match="--num-heads"):
        encoder_from_state(odd)
    assert encoder_from_state(odd, num_heads=3).config["depth"] == 3


# In the PyTorch interpreter: timm's SwinTransformer with random weights, saved by torch.save in
# the authors' layout (Microsoft's names and buffers, student/teacher under module.backbone.),
# and its forward_features on x.
TORCH_SCRIPT = """
import json, re, sys
try:
    import numpy as np, torch
    from timm.models.swin_transformer import SwinTransformer
except ImportError as e:
    print(e); sys.exit(3)
cfg, out = json.loads(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
model = SwinTransformer(num_classes=0, img_size=cfg["img_size"], patch_size=cfg["patch_size"],
                        in_chans=cfg["in_chans"], embed_dim=cfg["embed_dim"], depths=cfg["depths"],
                        num_heads=cfg["num_heads"], window_size=cfg["window_size"]).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.ndim == 1 or "relative_position_bias_table" in name:
            p.copy_((1 if name.endswith("weight") else 0) + 0.2 * torch.randn_like(p))
state = {}
for name, value in model.state_dict().items():
    m = re.match(r"^layers\\.(\\d+)\\.downsample\\.(.+)$", name)
    state[f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else name] = value
for i, layer in enumerate(model.layers):
    for j, block in enumerate(layer.blocks):
        if block.attn_mask is not None:
            state[f"layers.{i}.blocks.{j}.attn_mask"] = block.attn_mask
backbone = {f"module.backbone.{k}": v for k, v in state.items()}
torch.save({"teacher": backbone, "student": {k: 0 * v for k, v in backbone.items()}, "epoch": 100},
           out + "/ace_swin.pth")
x = torch.from_numpy(np.load(out + "/x.npy"))
with torch.no_grad():
    np.save(out + "/features.npy", model.forward_features(x).numpy())
"""


def test_ace_convert_reads_a_pth_in_the_authors_layout(tmp_path):
    if not TORCH_PYTHON.exists():
        pytest.skip(f"no PyTorch interpreter at {TORCH_PYTHON} (set ACE_TORCH_PYTHON)")
    x = np.random.default_rng(5).normal(size=(2, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    made = subprocess.run([str(TORCH_PYTHON), "-c", TORCH_SCRIPT, json.dumps(SWIN), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    if made.returncode == 3:
        pytest.skip(f"timm is not installed in {TORCH_PYTHON}: {made.stdout.strip()}")
    assert made.returncode == 0, made.stderr
    # The command runs where PyTorch is: the PyTorch interpreter, on this source tree's ace.
    env = {**os.environ, "PYTHONPATH": str(Path(ace.__file__).parent.parent)}
    cmd = [str(TORCH_PYTHON), "-m", "ace", "convert", str(tmp_path / "ace_swin.pth"), "--out",
           str(tmp_path / "enc.safetensors")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if run.returncode != 0 and "No module named" in run.stderr:
        pytest.skip(f"{TORCH_PYTHON} cannot import ace's dependencies: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr
    assert "img_size 64" in run.stdout and "depths [2, 2, 2, 2]" in run.stdout
    enc = ace.Encoder.load(tmp_path / "enc.safetensors")
    enc.precision = "fp32"
    ours = enc.forward_features(x)
    theirs = np.load(tmp_path / "features.npy").reshape(ours.shape)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_ace_convert_without_pytorch_says_what_to_install(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    (tmp_path / "x.pth").write_bytes(b"not read")
    with pytest.raises(ace.ACEError, match="pip install torch"):
        ace.convert.convert(tmp_path / "x.pth", tmp_path / "out.safetensors")

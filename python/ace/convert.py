"""`ace convert`: encoders from PyTorch checkpoints of other implementations.

The authors' released ACE Swin-B (and DINO-style runs in general) store a dict with `student`
and `teacher` state dicts whose backbone weights carry a `module.backbone.` prefix. Their Swin
is Microsoft's reference implementation, which differs from timm 1.x (our names) only in where
a stage's patch merging lives: Microsoft's `layers.{i}.downsample` closes stage i, timm's
`layers.{i+1}.downsample` opens stage i+1 (same tensors, same concatenation order). DINO's ViTs
already use timm's names. The encoder's shape is read off the weights; only what they cannot
tell (a ViT's heads when no preset matches, a Swin's input size when no shifted block stores
its attention mask) must be given.

Reading a `.pth` needs PyTorch (`pip install torch`; it is never a dependency of ace); the
mapping itself works on any dict of arrays (`encoder_from_state`).
"""
import math
import re
from pathlib import Path

import numpy as np

from .config import PRESET_SHAPES, SWIN_PRESETS, VIT_PRESETS
from .encoder import Encoder
from .errors import ACEError
from .preprocess import JSRT_MEAN, JSRT_STD

# Prefixes of backbone weights in DINO-style training checkpoints, stripped in this order.
_PREFIXES = ("module.", "backbone.", "encoder.")
# Buffers of Microsoft's Swin that timm and ace compute instead of storing.
_BUFFERS = re.compile(r"(^|\.)(relative_position_index|attn_mask)$")
_MERGING = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")


def read_torch_checkpoint(path):
    """The nested dict of a PyTorch checkpoint, tensors as float32 NumPy arrays (weights only:
    no code in the file is run)."""
    try:
        import torch
    except ImportError:
        raise ACEError("reading a PyTorch checkpoint needs PyTorch, which ace does not depend on: "
                       "pip install torch (CPU wheels suffice)") from None
    path = Path(path)
    if not path.is_file():
        raise ACEError(f"no checkpoint file at {path}")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated or foreign files
        raise ACEError(f"{path} is not a readable PyTorch checkpoint: {e}") from None

    def arrays(value):
        if isinstance(value, dict):
            return {k: arrays(v) for k, v in value.items()}
        if isinstance(value, torch.Tensor):
            return value.detach().to(torch.float32).numpy() if value.is_floating_point() else value.numpy()
        return value
    return arrays(data)


def backbone_state(checkpoint, which="teacher"):
    """The backbone's weights from a checkpoint dict: its `which` ("teacher" or "student") state
    dict when it holds both, else its `model` / `state_dict` entry or itself; prefixes
    (`module.`, `backbone.`) stripped, and only backbone weights kept when they are marked."""
    if which not in ("teacher", "student"):
        raise ACEError(f"which must be 'teacher' or 'student', got {which!r}")
    if not isinstance(checkpoint, dict):
        raise ACEError(f"a checkpoint must be a dict of tensors, got {type(checkpoint).__name__}")
    state = checkpoint
    if "teacher" in state and "student" in state:
        state = state[which]
    else:
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise ACEError(f"the checkpoint holds no tensors (top-level keys: {sorted(checkpoint)[:8]})")
    marked = [k for k in tensors if "backbone." in k]
    if marked:   # DINO-style: heads (head., composer., ...) sit beside the backbone
        tensors = {k[k.index("backbone.") + len("backbone."):]: tensors[k] for k in marked}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def encoder_from_state(state, *, img_size=None, num_heads=None, mean=JSRT_MEAN, std=JSRT_STD):
    """An `ace.Encoder` holding a backbone state dict in Microsoft's Swin layout (or timm's) or
    DINO's / timm's ViT layout; the config is read off the tensor shapes."""
    if "patch_embed.proj.weight" not in state:
        raise ACEError("not a ViT or Swin backbone: no patch_embed.proj.weight among "
                       f"{sorted(state)[:6]}{' ...' if len(state) > 6 else ''}")
    if any(k.startswith("layers.") for k in state):
        config, state = _swin(state, img_size)
    elif any(k.startswith("blocks.") for k in state):
        config, state = _vit(state, num_heads)
    else:
        raise ACEError("the backbone has neither Swin stages (layers.*) nor ViT blocks (blocks.*)")
    enc = Encoder.from_config(config, mean=mean, std=std)
    enc.load_state_dict({k: np.asarray(v, np.float32) for k, v in state.items()})
    return enc


def convert(path, out, *, which="teacher", img_size=None, num_heads=None, mean=JSRT_MEAN, std=JSRT_STD):
    """Read a PyTorch checkpoint, write our encoder file (timm names, config and
    preprocessing in the metadata) to `out`; returns the encoder."""
    enc = encoder_from_state(backbone_state(read_torch_checkpoint(path), which),
                             img_size=img_size, num_heads=num_heads, mean=mean, std=std)
    enc.save(out)
    return enc


def _swin(state, img_size):
    if "absolute_pos_embed" in state:
        raise ACEError("this Swin has an absolute position embedding (ape=True), which ace's Swin does not")
    img_size = img_size or _swin_img_size(state)
    state = {k: v for k, v in state.items() if not _BUFFERS.search(k) and not k.startswith("head.")}
    if any(k.startswith("layers.0.downsample.") for k in state):
        # Microsoft's layout: stage i's closing merging is timm's opening one of stage i + 1.
        state = {(f"layers.{int(m[1]) + 1}.downsample.{m[2]}" if (m := _MERGING.match(k)) else k): v
                 for k, v in state.items()}
    proj = state["patch_embed.proj.weight"]
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    stages = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    depths, heads = [], []
    for i in range(stages):
        blocks = {int(k.split(".")[3]) for k in state if k.startswith(f"layers.{i}.blocks.")}
        table = state.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        if not blocks or table is None:
            raise ACEError(f"Swin stage {i} has no blocks or no relative_position_bias_table")
        depths.append(len(blocks))
        heads.append(int(table.shape[1]))
    # The first stage's table has (2w - 1)^2 rows (later stages may clamp w to their grid).
    window = (math.isqrt(state["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]) + 1) // 2
    if not img_size:
        raise ACEError("the checkpoint does not say the Swin's input size (it stores no attention mask); "
                       "give it (--img-size, e.g. 224, or 448 for the paper's)")
    config = {"preset": _preset(SWIN_PRESETS, embed_dim, depths, heads) or "swin_custom",
              "embed_dim": int(embed_dim), "depths": depths, "num_heads": heads, "window_size": int(window),
              "patch_size": int(patch), "in_chans": int(in_chans), "img_size": int(img_size),
              "mlp_ratio": int(state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] // embed_dim), "drop_path": 0.0}
    return config, state


def _swin_img_size(state):
    """The input size told by a shifted block's stored attention mask (windows, N, N) in stage
    i: its grid is sqrt(windows) windows of sqrt(N) tokens, each token patch * 2^i pixels."""
    patch = state["patch_embed.proj.weight"].shape[2]
    for key, mask in state.items():
        m = re.match(r"^layers\.(\d+)\.blocks\.\d+\.attn_mask$", key)
        if m and getattr(mask, "ndim", 0) == 3:
            side = math.isqrt(mask.shape[0]) * math.isqrt(mask.shape[1])
            return side * patch << int(m[1])
    return None


def _vit(state, num_heads):
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    proj, pos = state["patch_embed.proj.weight"], state.get("pos_embed")
    if pos is None or "cls_token" not in state:
        raise ACEError("this ViT has no cls_token / pos_embed, which ace's ViT needs")
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    preset = _preset(VIT_PRESETS, embed_dim, depth, num_heads)
    if num_heads is None:
        if preset is None:
            raise ACEError(f"no ViT preset has width {embed_dim} and depth {depth}; give the number of heads "
                           "(--num-heads), which the weights do not tell")
        num_heads = PRESET_SHAPES[preset]["num_heads"]
    config = {"preset": preset or "vit_custom", "embed_dim": int(embed_dim), "depth": int(depth),
              "num_heads": int(num_heads), "patch_size": int(patch), "in_chans": int(in_chans),
              "img_size": int(math.isqrt(pos.shape[1] - 1) * patch),
              "mlp_ratio": int(state["blocks.0.mlp.fc1.weight"].shape[0] // embed_dim), "drop_path": 0.0}
    return config, state


def _preset(names, embed_dim, depth, heads):
    """The preset of this width and depth (and heads, when known), or None."""
    for name in names:
        shape = PRESET_SHAPES[name]
        if shape["embed_dim"] == embed_dim and shape.get("depth", shape.get("depths")) == depth \
                and heads in (None, shape["num_heads"]):
            return name
    return None

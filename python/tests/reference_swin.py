"""Reference Swin Transformer in NumPy, following timm's ``SwinTransformer.forward_features``.

Recomputes the final tokens from a state dict with timm's parameter names, in float64, written
from the paper's definitions rather than from the core's code:

    z_0 = LN(E(x))                                    (patch embedding: conv with kernel = stride = p)
    stage i > 0 opens with a patch merging: each 2x2 block -> concat (x00, x10, x01, x11) -> LN -> W
    block:  z' = z + R^-1(WMSA(R(LN1(z))))           (R: roll by -s, cut into w x w windows)
            z  = z' + MLP(LN2(z'))
    out = LN(z)

Window attention per window and head: softmax(q k^T / sqrt(d) + B + M) v with B the relative
position bias (table row of the offset (dy, dx)) and M the shifted-window mask: -100 between
tokens that the roll brought together from different image regions. Every second block of a
stage is shifted by w // 2, unless its grid is a single window. LayerNorm eps 1e-5.
"""

from __future__ import annotations

import numpy as np

from reference_vit import _gelu, _patch_embed, _softmax

EPS = 1e-5


def layer_norm(x, weight, bias):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def relative_position_index(w):
    """index[i, j] = (dy + w - 1) * (2w - 1) + (dx + w - 1) for the offset (dy, dx) = pos_i - pos_j."""
    ys, xs = np.meshgrid(np.arange(w), np.arange(w), indexing="ij")
    coords = np.stack([ys.ravel(), xs.ravel()])                 # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (w - 1)     # 2, N, N
    return rel[0] * (2 * w - 1) + rel[1]


def windows_of(grid, w):
    """(B, H, W, C) -> (B * nW, w * w, C), windows row-major, tokens row-major in a window."""
    b, h, wd, c = grid.shape
    return grid.reshape(b, h // w, w, wd // w, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def grid_of(windows, b, h, wd, w):
    c = windows.shape[-1]
    return windows.reshape(b, h // w, wd // w, w, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, wd, c)


def shift_mask(side, w, s):
    """(nW, N, N): label each position of the grid rolled by -s with the region it came from
    (rows and columns: [0, side - w), [side - w, side - s), [side - s, side)); tokens of a
    window with different labels get -100."""
    def region(p):
        return np.where(p < side - w, 0, np.where(p < side - s, 1, 2))
    ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    label = (region(ys) * 3 + region(xs))[None, :, :, None].astype(np.float64)
    lw = windows_of(label, w)[..., 0]                           # nW, N
    return np.where(lw[:, :, None] == lw[:, None, :], 0.0, -100.0)


def window_attention(x, sd, prefix, heads, w, mask):
    """x (B * nW, N, C) -> (B * nW, N, C)."""
    bw, n, c = x.shape
    d = c // heads
    qkv = x @ sd[prefix + "qkv.weight"].T + sd[prefix + "qkv.bias"]
    qkv = qkv.reshape(bw, n, 3, heads, d).transpose(2, 0, 3, 1, 4)            # 3, Bw, H, N, d
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)                        # Bw, H, N, N
    table = sd[prefix + "relative_position_bias_table"]                      # (2w-1)^2, H
    logits = logits + table[relative_position_index(w)].transpose(2, 0, 1)[None]
    if mask is not None:
        nw = mask.shape[0]
        logits = (logits.reshape(bw // nw, nw, heads, n, n) + mask[None, :, None]).reshape(bw, heads, n, n)
    out = (_softmax(logits) @ v).transpose(0, 2, 1, 3).reshape(bw, n, c)
    return out @ sd[prefix + "proj.weight"].T + sd[prefix + "proj.bias"]


def swin_forward_features(sd, x, *, depths, num_heads, window_size, patch_size=4, shifts=True):
    """x (B, in_chans, S, S) -> final tokens (B, g, g, C_final), as timm's forward_features.
    `shifts=False` leaves every block unshifted (a deliberately wrong model, for tests)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    b, side = x.shape[0], x.shape[2] // patch_size
    z = _patch_embed(np.asarray(x, np.float64), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                     patch_size)
    z = layer_norm(z, sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"]).reshape(b, side, side, -1)
    for i, depth in enumerate(depths):
        if i > 0:
            p = f"layers.{i}.downsample."
            z = np.concatenate([z[:, 0::2, 0::2], z[:, 1::2, 0::2], z[:, 0::2, 1::2], z[:, 1::2, 1::2]], axis=-1)
            z = layer_norm(z, sd[p + "norm.weight"], sd[p + "norm.bias"]) @ sd[p + "reduction.weight"].T
            side //= 2
        w = min(window_size, side)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            s = w // 2 if shifts and j % 2 == 1 and side > window_size else 0
            h = layer_norm(z, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
            if s:
                h = np.roll(h, (-s, -s), axis=(1, 2))
            a = window_attention(windows_of(h, w), sd, p + "attn.", num_heads[i], w,
                                 shift_mask(side, w, s) if s else None)
            a = grid_of(a, b, side, side, w)
            if s:
                a = np.roll(a, (s, s), axis=(1, 2))
            z = z + a
            h = layer_norm(z, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
            h = _gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
            z = z + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return layer_norm(z, sd["norm.weight"], sd["norm.bias"])

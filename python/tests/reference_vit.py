"""Reference Vision Transformer in NumPy, following timm's ``VisionTransformer``.

This module recomputes ``VisionTransformer.forward_features`` from a state dict
that uses timm's parameter names, so that the Swift implementation can be
checked against an independent computation. Everything is evaluated in float64.

The model is the standard pre-norm ViT:

    z_0     = [cls ; E(x)] + P                     (patch embedding E, positions P)
    z'_l    = z_{l-1} + Attn(LN1(z_{l-1}))
    z_l     = z'_l + MLP(LN2(z'_l))                 (l = 1 .. depth)
    out     = LN(z_depth)

with LayerNorm eps 1e-6, multi-head self-attention with a biased qkv projection,
an MLP with the exact (erf) GELU, one class token and a learned absolute
position embedding. When the input grid differs from the grid the position
embedding was trained for, the grid part of the embedding is resized like
timm's ``resample_abs_pos_embed`` (PyTorch bicubic, align_corners=False,
antialias=False).
"""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = ["bicubic_matrix", "resample_pos_embed", "vit_forward_features", "vit_last_attention"]

LAYER_NORM_EPS = 1e-6

# Coefficient of the cubic convolution kernel used by PyTorch's bicubic mode.
CUBIC_A = -0.75


# --------------------------------------------------------------------------
# Bicubic resampling of the position embedding
# --------------------------------------------------------------------------


def _cubic_kernel(s: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
    """Keys' cubic convolution kernel W(s), supported on |s| < 2.

        W(s) = (a + 2)|s|^3 - (a + 3)|s|^2 + 1          for |s| <= 1
        W(s) = a|s|^3 - 5a|s|^2 + 8a|s| - 4a            for 1 < |s| < 2
        W(s) = 0                                        otherwise
    """
    s = np.abs(np.asarray(s, dtype=np.float64))
    near = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
    far = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
    return np.where(s <= 1.0, near, np.where(s < 2.0, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int, *, a: float = CUBIC_A) -> np.ndarray:
    """Matrix M of shape (n_out, n_in) such that ``M @ f`` is PyTorch's 1-D
    bicubic resize of ``f`` (align_corners=False, antialias=False). The kernel
    coefficient ``a`` defaults to PyTorch's -0.75.

    For output index i the source coordinate is

        s_i = (i + 0.5) * n_in / n_out - 0.5,

    with k = floor(s_i) and t = s_i - k. The four taps k-1, k, k+1, k+2 get the
    weights W(t + 1), W(t), W(1 - t), W(2 - t); tap indices outside
    [0, n_in - 1] are clamped to the border, so their weights accumulate on the
    first or last sample. Every row therefore sums to 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in={n_in}, n_out={n_out}")
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        s = (i + 0.5) * scale - 0.5
        k = math.floor(s)
        t = s - k
        for offset in (-1, 0, 1, 2):
            weight = float(_cubic_kernel(t - offset, a))
            j = min(max(k + offset, 0), n_in - 1)
            m[i, j] += weight
    return m


def resample_pos_embed(pos_embed: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Position embedding for a patch grid ``grid = (h, w)``.

    ``pos_embed`` has shape (1, 1 + g0*g0, C): the class-token position followed
    by a square g0 x g0 grid in row-major order. The grid part is viewed as an
    image (C, g0, g0), resized bicubically to (C, h, w) one axis at a time, and
    flattened back in row-major order; the class-token position is kept as is.
    Returns an array of shape (1, 1 + h*w, C).
    """
    pos_embed = np.asarray(pos_embed, dtype=np.float64)
    num_grid = pos_embed.shape[1] - 1
    g0 = math.isqrt(num_grid)
    if g0 * g0 != num_grid:
        raise ValueError(f"position grid of {num_grid} tokens is not square")
    h, w = grid
    if (h, w) == (g0, g0):
        return pos_embed
    channels = pos_embed.shape[2]
    image = pos_embed[0, 1:].reshape(g0, g0, channels)  # (y, x, C)
    rows = bicubic_matrix(g0, h)  # (h, g0)
    cols = bicubic_matrix(g0, w)  # (w, g0)
    # out[y, x, c] = sum_{u, v} rows[y, u] * cols[x, v] * image[u, v, c]
    resized = np.einsum("yu,xv,uvc->yxc", rows, cols, image)
    return np.concatenate([pos_embed[:, :1], resized.reshape(1, h * w, channels)], axis=1)


# --------------------------------------------------------------------------
# Transformer building blocks
# --------------------------------------------------------------------------


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """LayerNorm over the last axis with the biased variance and eps 1e-6."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y = x W^T + b, with W stored as (out_features, in_features)."""
    return x @ weight.T + bias


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _patch_embed(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, p: int) -> np.ndarray:
    """Conv2d with kernel = stride = p, then flatten(2).transpose(1, 2).

    Token n = y * w + x (row-major over the h x w grid) is

        E[b, n, c] = bias[c] + sum_{i, ky, kx} weight[c, i, ky, kx] * x[b, i, y*p + ky, x*p + kx].
    """
    batch, in_chans, height, width = x.shape
    if height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not a multiple of patch size {p}")
    h, w = height // p, width // p
    # (B, i, y, ky, x, kx) -> (B, y, x, i, ky, kx): one row per patch, laid out like the kernel.
    patches = x.reshape(batch, in_chans, h, p, w, p).transpose(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, h * w, in_chans * p * p)
    return _linear(patches, weight.reshape(weight.shape[0], -1), bias)


def _attention(x: np.ndarray, state: dict[str, np.ndarray], prefix: str, num_heads: int) -> np.ndarray:
    """Multi-head self-attention as in timm's ``Attention``.

    The 3C qkv outputs are ordered (3, heads, head_dim); for every head
    softmax(q k^T * head_dim^-1/2) v is formed, the heads are concatenated in
    head order and passed through the output projection.
    """
    batch, tokens, channels = x.shape
    if channels % num_heads:
        raise ValueError(f"embedding dim {channels} is not divisible by {num_heads} heads")
    attn, v = _attention_probs(x, state, prefix, num_heads)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, channels)
    return _linear(out, state[prefix + "proj.weight"], state[prefix + "proj.bias"])


def _attention_probs(x: np.ndarray, state: dict[str, np.ndarray], prefix: str, num_heads: int):
    """softmax(q k^T * head_dim^-1/2) per head, (B, heads, N, N), and the values (B, heads, N, d)."""
    batch, tokens, channels = x.shape
    head_dim = channels // num_heads
    qkv = _linear(x, state[prefix + "qkv.weight"], state[prefix + "qkv.bias"])
    # (B, N, 3, heads, d) -> (3, B, heads, N, d)
    qkv = qkv.reshape(batch, tokens, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    return _softmax((q * head_dim**-0.5) @ k.transpose(0, 1, 3, 2)), v


def _mlp(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """fc2(GELU(fc1(x)))."""
    hidden = _gelu(_linear(x, state[prefix + "fc1.weight"], state[prefix + "fc1.bias"]))
    return _linear(hidden, state[prefix + "fc2.weight"], state[prefix + "fc2.bias"])


def _depth(state: dict[str, np.ndarray]) -> int:
    """Number of transformer blocks, i.e. the number of distinct i in ``blocks.{i}.*``."""
    indices = {int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))}
    if indices != set(range(len(indices))):
        raise ValueError(f"block indices are not contiguous from 0: {sorted(indices)}")
    return len(indices)


# --------------------------------------------------------------------------
# Full model
# --------------------------------------------------------------------------


def vit_forward_features(
    state: dict[str, np.ndarray],
    x: np.ndarray,
    *,
    num_heads: int,
    patch_size: int = 16,
) -> np.ndarray:
    """timm ``VisionTransformer.forward_features`` for the weights in ``state``.

    ``x`` has shape (B, in_chans, H, W) with H and W multiples of ``patch_size``.
    Returns the normed tokens, shape (B, 1 + h*w, C) in float64, with the class
    token first and the patch tokens in row-major order (h = H/p, w = W/p).
    """
    state = {key: np.asarray(value, dtype=np.float64) for key, value in state.items()}
    z = _tokens(state, x, patch_size)
    for i in range(_depth(state)):
        prefix = f"blocks.{i}."
        z = z + _attention(
            _layer_norm(z, state[prefix + "norm1.weight"], state[prefix + "norm1.bias"]),
            state,
            prefix + "attn.",
            num_heads,
        )
        z = z + _mlp(
            _layer_norm(z, state[prefix + "norm2.weight"], state[prefix + "norm2.bias"]),
            state,
            prefix + "mlp.",
        )

    return _layer_norm(z, state["norm.weight"], state["norm.bias"])


def _tokens(state: dict[str, np.ndarray], x: np.ndarray, p: int) -> np.ndarray:
    """z_0: the class token and the patch embeddings plus the position embedding, float64."""
    x = np.asarray(x, dtype=np.float64)
    patches = _patch_embed(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], p)
    batch, _, channels = patches.shape
    h, w = x.shape[2] // p, x.shape[3] // p
    cls = np.broadcast_to(state["cls_token"], (batch, 1, channels))
    return np.concatenate([cls, patches], axis=1) + resample_pos_embed(state["pos_embed"], (h, w))


def vit_last_attention(
    state: dict[str, np.ndarray],
    x: np.ndarray,
    *,
    num_heads: int,
    patch_size: int = 16,
) -> np.ndarray:
    """The last block's attention probabilities of every query, (B, heads, 1 + h*w, 1 + h*w)
    in float64: softmax(q k^T / sqrt(d)) of LN1 of the tokens entering the last block. Row 0
    is the class token's query, the row DINO draws as attention maps."""
    state = {key: np.asarray(value, dtype=np.float64) for key, value in state.items()}
    z = _tokens(state, x, patch_size)
    depth = _depth(state)
    for i in range(depth - 1):
        prefix = f"blocks.{i}."
        z = z + _attention(_layer_norm(z, state[prefix + "norm1.weight"], state[prefix + "norm1.bias"]),
                           state, prefix + "attn.", num_heads)
        z = z + _mlp(_layer_norm(z, state[prefix + "norm2.weight"], state[prefix + "norm2.bias"]),
                     state, prefix + "mlp.")
    last = f"blocks.{depth - 1}."
    probs, _ = _attention_probs(_layer_norm(z, state[last + "norm1.weight"], state[last + "norm1.bias"]),
                                state, last + "attn.", num_heads)
    return probs

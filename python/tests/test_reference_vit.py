"""Self-checks of the NumPy reference ViT in reference_vit.py."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from reference_vit import _patch_embed, bicubic_matrix, resample_pos_embed, vit_forward_features


def random_state(rng, *, dim, depth, hidden, grid, in_chans=3, patch=16):
    """A random state dict with timm's ViT parameter names and shapes."""
    state = {
        "cls_token": rng.normal(size=(1, 1, dim)),
        "pos_embed": rng.normal(size=(1, 1 + grid * grid, dim)),
        "patch_embed.proj.weight": rng.normal(size=(dim, in_chans, patch, patch)) * 0.05,
        "patch_embed.proj.bias": rng.normal(size=dim),
        "norm.weight": 1.0 + 0.1 * rng.normal(size=dim),
        "norm.bias": 0.1 * rng.normal(size=dim),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1.0 + 0.1 * rng.normal(size=dim),
                b + "norm1.bias": 0.1 * rng.normal(size=dim),
                b + "attn.qkv.weight": rng.normal(size=(3 * dim, dim)) / math.sqrt(dim),
                b + "attn.qkv.bias": 0.1 * rng.normal(size=3 * dim),
                b + "attn.proj.weight": rng.normal(size=(dim, dim)) / math.sqrt(dim),
                b + "attn.proj.bias": 0.1 * rng.normal(size=dim),
                b + "norm2.weight": 1.0 + 0.1 * rng.normal(size=dim),
                b + "norm2.bias": 0.1 * rng.normal(size=dim),
                b + "mlp.fc1.weight": rng.normal(size=(hidden, dim)) / math.sqrt(dim),
                b + "mlp.fc1.bias": 0.1 * rng.normal(size=hidden),
                b + "mlp.fc2.weight": rng.normal(size=(dim, hidden)) / math.sqrt(hidden),
                b + "mlp.fc2.bias": 0.1 * rng.normal(size=dim),
            }
        )
    return state


def layer_norm_loop(v, weight, bias, eps=1e-6):
    """LayerNorm of one vector, written out."""
    mean = sum(v) / len(v)
    var = sum((e - mean) ** 2 for e in v) / len(v)
    return np.array([(e - mean) / math.sqrt(var + eps) for e in v]) * weight + bias


# --------------------------------------------------------------------------
# bicubic_matrix
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 14])
def test_bicubic_same_size_is_identity(n):
    np.testing.assert_allclose(bicubic_matrix(n, n), np.eye(n), atol=1e-15)


@pytest.mark.parametrize("n_in,n_out", [(2, 4), (14, 16), (14, 20), (24, 14), (7, 3), (1, 5), (5, 1)])
def test_bicubic_rows_sum_to_one(n_in, n_out):
    m = bicubic_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(axis=1), np.ones(n_out), atol=1e-14)


def test_bicubic_upsample_2_to_4_by_hand():
    """2 -> 4, worked out from PyTorch's rule with exact fractions.

    Kernel with A = -3/4 (Keys' cubic convolution):
        |s| <= 1:      (A+2)|s|^3 - (A+3)|s|^2 + 1
        1 < |s| < 2:   A|s|^3 - 5A|s|^2 + 8A|s| - 4A
    Source coordinate s_i = (i + 1/2) * 2/4 - 1/2:
        s_0 = -1/4, s_1 = 1/4, s_2 = 3/4, s_3 = 5/4.
    Taps are floor(s)-1 .. floor(s)+2 at distance |s - tap|, indices clamped to {0, 1}.
    """
    a = Fraction(-3, 4)

    def kernel(s):
        s = abs(s)
        if s <= 1:
            return (a + 2) * s**3 - (a + 3) * s**2 + 1
        if s < 2:
            return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
        return Fraction(0)

    def clamp(j):
        return min(max(j, 0), 1)

    expected = [[Fraction(0), Fraction(0)] for _ in range(4)]
    for i in range(4):
        s = (i + Fraction(1, 2)) * Fraction(2, 4) - Fraction(1, 2)
        k = math.floor(s)
        for tap in (k - 1, k, k + 1, k + 2):
            expected[i][clamp(tap)] += kernel(s - tap)

    # Kernel values that appear (distances 1/4, 3/4, 5/4, 7/4):
    w14 = (a + 2) * Fraction(1, 64) - (a + 3) * Fraction(1, 16) + 1
    w34 = (a + 2) * Fraction(27, 64) - (a + 3) * Fraction(9, 16) + 1
    w54 = a * Fraction(125, 64) - 5 * a * Fraction(25, 16) + 8 * a * Fraction(5, 4) - 4 * a
    w74 = a * Fraction(343, 64) - 5 * a * Fraction(49, 16) + 8 * a * Fraction(7, 4) - 4 * a
    assert (w14, w34, w54, w74) == (Fraction(225, 256), Fraction(67, 256), Fraction(-27, 256), Fraction(-9, 256))
    # Row by row:
    #   s_0 = -1/4: taps -2, -1, 0, 1 at distances 7/4, 3/4, 1/4, 5/4; -2 and -1 clamp to 0.
    #   s_1 =  1/4: taps -1, 0, 1, 2 at distances 5/4, 1/4, 3/4, 7/4; -1 -> 0, 2 -> 1.
    #   s_2, s_3 mirror s_1, s_0.
    by_hand = [
        [w74 + w34 + w14, w54],
        [w54 + w14, w34 + w74],
        [w34 + w74, w54 + w14],
        [w54, w74 + w34 + w14],
    ]
    assert expected == by_hand
    assert by_hand[0] == [Fraction(283, 256), Fraction(-27, 256)]
    assert by_hand[1] == [Fraction(198, 256), Fraction(58, 256)]

    np.testing.assert_allclose(bicubic_matrix(2, 4), np.array(by_hand, dtype=np.float64), rtol=0, atol=1e-15)


def interior_rows(n_in, n_out):
    """(i, s_i, t_i) for the output rows whose four taps floor(s)-1 .. floor(s)+2
    all lie inside [0, n_in - 1], so no border clamping is involved."""
    rows = []
    for i in range(n_out):
        s = (i + 0.5) * n_in / n_out - 0.5
        k = math.floor(s)
        if k - 1 >= 0 and k + 2 <= n_in - 1:
            rows.append((i, s, s - k))
    return rows


RAMP_SIZES = [(7, 13), (14, 20), (20, 14), (16, 9), (16, 8)]


@pytest.mark.parametrize("n_in,n_out", RAMP_SIZES)
def test_bicubic_keys_kernel_reproduces_linear_ramp_in_interior(n_in, n_out):
    """With Keys' a = -1/2 the kernel reproduces polynomials up to degree 2, so
    away from the border f(j) = 3j - 2 is mapped exactly to f(s_i)."""
    out = bicubic_matrix(n_in, n_out, a=-0.5) @ (3.0 * np.arange(n_in) - 2.0)
    rows = interior_rows(n_in, n_out)
    assert len(rows) >= n_out // 2
    for i, s, _ in rows:
        assert out[i] == pytest.approx(3.0 * s - 2.0, abs=1e-12)


@pytest.mark.parametrize("n_in,n_out", RAMP_SIZES)
def test_bicubic_pytorch_kernel_on_linear_ramp_in_interior(n_in, n_out):
    """PyTorch's a = -3/4 reproduces constants but not linear functions.

    For f(j) = j and taps at offsets o = -1, 0, 1, 2 from floor(s), the output is
    sum_o W(t - o) (floor(s) + o) = s + sum_o W(t - o) (o - t), and expanding the
    four kernel pieces gives the first moment

        sum_o W(t - o) (o - t) = -(2a + 1) t (1 - t) (1 - 2t),

    which vanishes for a = -1/2 and, for a = -3/4, equals t (1 - t) (1 - 2t) / 2:
    zero at t = 0 and t = 1/2 (e.g. exact 2x downsampling), nonzero otherwise.
    This pins down both the coefficient a and the source coordinate s_i.
    """
    a = -0.75
    out = bicubic_matrix(n_in, n_out) @ (3.0 * np.arange(n_in) - 2.0)
    rows = interior_rows(n_in, n_out)
    assert len(rows) >= n_out // 2
    for i, s, t in rows:
        moment = -(2 * a + 1) * t * (1 - t) * (1 - 2 * t)
        assert out[i] == pytest.approx(3.0 * (s + moment) - 2.0, abs=1e-12)


def test_resample_pos_embed_keeps_cls_and_is_separable():
    rng = np.random.default_rng(0)
    g0, dim = 4, 3
    pos = rng.normal(size=(1, 1 + g0 * g0, dim))
    out = resample_pos_embed(pos, (3, 6))
    assert out.shape == (1, 1 + 18, dim)
    np.testing.assert_array_equal(out[:, 0], pos[:, 0])
    rows, cols = bicubic_matrix(g0, 3), bicubic_matrix(g0, 6)
    grid = pos[0, 1:].reshape(g0, g0, dim)
    for c in range(dim):
        expected = rows @ grid[:, :, c] @ cols.T
        np.testing.assert_allclose(out[0, 1:, c], expected.reshape(-1), atol=1e-13)
    np.testing.assert_array_equal(resample_pos_embed(pos, (g0, g0)), pos)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def test_patch_embedding_matches_explicit_convolution_loop():
    """Conv2d with kernel = stride = p, flattened row-major, against an explicit loop."""
    rng = np.random.default_rng(1)
    p, dim, in_chans = 4, 5, 2
    w_conv = rng.normal(size=(dim, in_chans, p, p))
    b_conv = rng.normal(size=dim)
    x = rng.normal(size=(2, in_chans, 3 * p, 2 * p))  # grid 3 x 2, non-square
    h, w = 3, 2

    tokens = _patch_embed(x, w_conv, b_conv, p)
    assert tokens.shape == (2, h * w, dim)
    for b in range(2):
        for y in range(h):
            for xx in range(w):
                for c in range(dim):
                    acc = b_conv[c]
                    for i in range(in_chans):
                        for ky in range(p):
                            for kx in range(p):
                                acc += w_conv[c, i, ky, kx] * x[b, i, y * p + ky, xx * p + kx]
                    assert tokens[b, y * w + xx, c] == pytest.approx(acc, abs=1e-12)


def test_zero_blocks_give_layer_norm_of_embedding():
    """With qkv, proj, fc1 and fc2 all zero every residual branch adds 0, so the
    output is LN(cls + pos_cls) followed by LN(conv patch + resampled pos) in
    row-major order."""
    rng = np.random.default_rng(2)
    p, dim, g0 = 4, 6, 3
    state = random_state(rng, dim=dim, depth=2, hidden=8, grid=g0, in_chans=2, patch=p)
    for key in list(state):
        if key.startswith("blocks.") and (".attn." in key or ".mlp." in key):
            state[key] = np.zeros_like(state[key])
    x = rng.normal(size=(1, 2, 2 * p, 5 * p))  # grid 2 x 5, differs from 3 x 3
    h, w = 2, 5

    out = vit_forward_features(state, x, num_heads=2, patch_size=p)
    assert out.shape == (1, 1 + h * w, dim)
    assert out.dtype == np.float64

    pos = resample_pos_embed(state["pos_embed"], (h, w))[0]
    expected_cls = layer_norm_loop(state["cls_token"][0, 0] + pos[0], state["norm.weight"], state["norm.bias"])
    np.testing.assert_allclose(out[0, 0], expected_cls, atol=1e-12)
    weight = state["patch_embed.proj.weight"]
    bias = state["patch_embed.proj.bias"]
    for y in range(h):
        for xx in range(w):
            patch = x[0, :, y * p : (y + 1) * p, xx * p : (xx + 1) * p]
            embedded = np.array([np.sum(weight[c] * patch) for c in range(dim)]) + bias
            n = 1 + y * w + xx
            expected = layer_norm_loop(embedded + pos[n], state["norm.weight"], state["norm.bias"])
            np.testing.assert_allclose(out[0, n], expected, atol=1e-12)


def test_single_block_matches_per_head_loop():
    """One full block on a tiny input against a direct per-token, per-head computation."""
    rng = np.random.default_rng(3)
    p, dim, heads, hidden, g0 = 2, 6, 3, 10, 2
    head_dim = dim // heads
    state = random_state(rng, dim=dim, depth=1, hidden=hidden, grid=g0, in_chans=1, patch=p)
    x = rng.normal(size=(2, 1, g0 * p, g0 * p))

    out = vit_forward_features(state, x, num_heads=heads, patch_size=p)

    def s(name):
        return state["blocks.0." + name]

    for b in range(2):
        # Embedding: class token then patches in row-major order.
        z = [state["cls_token"][0, 0] + state["pos_embed"][0, 0]]
        for y in range(g0):
            for xx in range(g0):
                patch = x[b, :, y * p : (y + 1) * p, xx * p : (xx + 1) * p]
                e = np.array([np.sum(state["patch_embed.proj.weight"][c] * patch) for c in range(dim)])
                z.append(e + state["patch_embed.proj.bias"] + state["pos_embed"][0, 1 + y * g0 + xx])
        n = len(z)

        # Attention: qkv rows ordered (3, heads, head_dim).
        t = [layer_norm_loop(v, s("norm1.weight"), s("norm1.bias")) for v in z]
        qkv = [s("attn.qkv.weight") @ v + s("attn.qkv.bias") for v in t]
        q = [[r[0 * dim + hd * head_dim : 0 * dim + (hd + 1) * head_dim] for hd in range(heads)] for r in qkv]
        k = [[r[1 * dim + hd * head_dim : 1 * dim + (hd + 1) * head_dim] for hd in range(heads)] for r in qkv]
        v = [[r[2 * dim + hd * head_dim : 2 * dim + (hd + 1) * head_dim] for hd in range(heads)] for r in qkv]
        attended = []
        for i in range(n):
            per_head = []
            for hd in range(heads):
                logits = [float(q[i][hd] @ k[j][hd]) / math.sqrt(head_dim) for j in range(n)]
                mx = max(logits)
                weights = [math.exp(a - mx) for a in logits]
                total = sum(weights)
                per_head.append(sum((weights[j] / total) * v[j][hd] for j in range(n)))
            attended.append(np.concatenate(per_head))
        z = [z[i] + s("attn.proj.weight") @ attended[i] + s("attn.proj.bias") for i in range(n)]

        # MLP with exact GELU.
        def gelu(u):
            return np.array([0.5 * e * (1.0 + math.erf(e / math.sqrt(2.0))) for e in u])

        t = [layer_norm_loop(v, s("norm2.weight"), s("norm2.bias")) for v in z]
        z = [
            z[i] + s("mlp.fc2.weight") @ gelu(s("mlp.fc1.weight") @ t[i] + s("mlp.fc1.bias")) + s("mlp.fc2.bias")
            for i in range(n)
        ]

        expected = np.stack([layer_norm_loop(v, state["norm.weight"], state["norm.bias"]) for v in z])
        np.testing.assert_allclose(out[b], expected, atol=1e-12)


def test_depth_counts_blocks_and_shapes():
    rng = np.random.default_rng(4)
    state = random_state(rng, dim=8, depth=3, hidden=16, grid=2, in_chans=3, patch=16)
    x = rng.normal(size=(1, 3, 48, 32)).astype(np.float32)
    out = vit_forward_features(state, x, num_heads=2)
    assert out.shape == (1, 1 + 3 * 2, 8)
    assert np.all(np.isfinite(out))
    # Removing the last block changes the result, so all three were applied.
    fewer = {k: v for k, v in state.items() if not k.startswith("blocks.2.")}
    assert not np.allclose(vit_forward_features(fewer, x, num_heads=2), out)

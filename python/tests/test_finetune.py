"""ace.finetune: every head's backward and every loss's gradient against central finite differences
(float64), the heads' AdamW against the core's, and the loop through the core's backward."""
import numpy as np
import pytest

import ace
from ace import finetune


def numeric_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of x (changed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def random_head(head, rng):
    for p in head.params.values():
        p[...] = rng.normal(size=p.shape)
    return head


@pytest.mark.parametrize("make", [lambda: finetune.TokenLinear(5, 3), lambda: finetune.Heatmap(5, 2, 3),
                                  lambda: finetune.PooledLinear(5, 4)], ids=["token_linear", "heatmap", "pooled"])
def test_head_backward_matches_finite_differences(make):
    rng = np.random.default_rng(0)
    head = random_head(make(), rng)
    tokens = rng.normal(size=(2, 3, 4, 5))
    weights = rng.normal(size=head.forward(tokens).shape)   # loss = sum(out * weights)

    def loss():
        return float((head.forward(tokens) * weights).sum())

    head.forward(tokens)
    d_tokens = head.backward(weights)
    np.testing.assert_allclose(d_tokens, numeric_gradient(loss, tokens), rtol=1e-6, atol=1e-8)
    grads = dict(head.grads)
    for name, p in head.params.items():
        np.testing.assert_allclose(grads[name], numeric_gradient(loss, p), rtol=1e-6, atol=1e-8)


def test_heatmap_puts_each_tokens_block_under_the_token():
    """Output pixel (y, x) of key point k comes from token (y // r, x // r), output
    (y % r) * r + (x % r) of that token's block for k (the depth-to-space layout)."""
    head = finetune.Heatmap(width=1, points=2, upsample=2)
    head.params["b"][:] = np.arange(8)            # bias only: block entry (dy, dx, k) = its index
    out = head.forward(np.zeros((1, 3, 3, 1)))
    assert out.shape == (1, 2, 6, 6)
    for k in range(2):
        for y in range(6):
            for x in range(6):
                assert out[0, k, y, x] == ((y % 2) * 2 + x % 2) * 2 + k


@pytest.mark.parametrize("name", ["sigmoid", "softmax", "spatial"])
def test_loss_gradients_match_finite_differences(name):
    rng = np.random.default_rng(1)
    if name == "sigmoid":
        logits, target, fn = rng.normal(size=(2, 3, 3, 2)), rng.uniform(size=(2, 3, 3, 2)), \
            finetune.sigmoid_cross_entropy
    elif name == "softmax":
        logits, target, fn = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2]), finetune.softmax_cross_entropy
    else:
        logits = rng.normal(size=(2, 3, 4, 5))
        target = rng.uniform(size=logits.shape)
        target /= target.sum(axis=(2, 3), keepdims=True)
        target[1, 2] = np.nan                       # a missing key point: no loss, no gradient
        fn = finetune.spatial_cross_entropy
    loss, d = fn(logits, target)
    np.testing.assert_allclose(d, numeric_gradient(lambda: fn(logits, target)[0], logits), rtol=1e-6, atol=1e-9)
    assert np.isfinite(loss)
    if name == "spatial":
        assert np.all(d[1, 2] == 0)


def test_head_adamw_is_the_cores_adamw():
    """The final LayerNorm's parameters of a ViT have gradients known in closed form (bias: the
    sum of d output; weight: the sum of d output times the normalized input), so the core's AdamW
    steps on them can be repeated in NumPy. A zero gradient then shows which parameters decay:
    the core decays weight matrices only, as the heads' `decays` do."""
    enc = ace.Encoder("vit_nano", img_size=32, seed=0)
    enc.precision = "fp32"
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 1, 32, 32)).astype(np.float32)
    state = enc.state_dict()
    params = {name: state[name].astype(np.float64) for name in ("norm.weight", "norm.bias")}
    ours = finetune.AdamW(params)
    lr, wd = 1e-2, 0.1
    for _ in range(3):
        gamma, beta = enc.state_dict()["norm.weight"], enc.state_dict()["norm.bias"]
        out = enc.forward_train(x).astype(np.float64)
        d = rng.normal(size=out.shape)
        normalized = (out - beta) / gamma
        grads = {"norm.weight": (d * normalized).sum(axis=(0, 1)), "norm.bias": d.sum(axis=(0, 1))}
        enc.backward(d)
        enc.adamw_step(lr, wd)
        ours.step(grads, lr, wd)
        for name, p in params.items():
            np.testing.assert_allclose(enc.state_dict()[name], p, rtol=1e-4, atol=1e-5)
    # A zero gradient on fresh moments: Adam's update is 0, only the decay acts, on matrices only.
    enc = ace.Encoder("vit_nano", img_size=32, seed=0)
    before = enc.state_dict()
    enc.forward_train(x)
    enc.backward(np.zeros(out.shape))
    enc.adamw_step(lr, wd)
    after = enc.state_dict()
    for name, value in before.items():
        factor = (1 - lr * wd) if value.ndim >= 2 and "pos_embed" not in name and "cls_token" not in name else 1.0
        np.testing.assert_allclose(after[name], value * factor, rtol=2e-6, atol=1e-7, err_msg=name)
    head = finetune.TokenLinear(3, 2)
    head.params["w"][:] = 1.0
    head.params["b"][:] = 1.0
    opt = finetune.AdamW(head.params, head.decays)
    opt.step({"w": np.zeros((3, 2)), "b": np.zeros(2)}, lr, wd)
    assert np.all(head.params["w"] == 1 - lr * wd) and np.all(head.params["b"] == 1.0)


def test_finetune_trains_a_copy_and_lowers_the_loss():
    """A pooled linear classifier on 32 px noise images: bright vs dark. The loss after fine-tuning
    is far below log 2, and the encoder passed in is unchanged."""
    rng = np.random.default_rng(3)
    labels = np.arange(16) % 2
    images = np.clip(rng.uniform(0.2, 0.5, size=(16, 32, 32)) + 0.3 * labels[:, None, None], 0, 1)
    enc = ace.Encoder("vit_nano", img_size=32, seed=0)
    before = enc.state_dict()
    head = finetune.PooledLinear(enc.width, 2)
    model = finetune.finetune_end_to_end(enc, images, labels, head, finetune.softmax_cross_entropy, epochs=10,
                                         batch=8, lr=1e-3, head_lr=1e-2)
    loss, _ = finetune.softmax_cross_entropy(finetune.predict(model, head, images), labels)
    assert loss < 0.2
    assert all(np.array_equal(v, enc.state_dict()[k]) for k, v in before.items())
    assert not np.array_equal(model.state_dict()["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    with pytest.raises(ace.ACEError, match="one target per image"):
        finetune.finetune_end_to_end(enc, images, labels[:3], head, finetune.softmax_cross_entropy)
    with pytest.raises(ace.ACEError, match="unknown finetune setting 'steps'"):
        finetune.settings({"steps": 3})

"""Fine-tuning an encoder end to end with a small task head: one loop for every task.

A step is the chain rule written out, as in the core:

    features = model.forward_train(x)          # the core's forward, keeping what backward needs
    tokens   = token_map(features)             # (B, h, w, C): the patch tokens as a grid
    out      = head.forward(tokens)            # the task's prediction
    loss, d_out = loss_fn(out, target)         # its gradient
    d_tokens = head.backward(d_out)            # the head's parameter gradients, and d loss / d tokens
    model.backward(d_features(d_tokens))       # the core's backward through every block
    model.adamw_step(lr, weight_decay)         # the core's AdamW on the encoder
    head_optimizer.step(head.grads, ...)       # the same AdamW formula on the head (NumPy)

The heads are small NumPy modules with an explicit forward and backward (float64):

* `TokenLinear`: a linear map of every token (per-token logits, segmentation);
* `Heatmap`: a linear map of every token to an r x r block of heat-map pixels per key point
  (sub-pixel upsampling: a heat map at output stride patch / r), key points;
* `PooledLinear`: a linear classifier on the mean of the tokens, classification and Grad-CAM.

All start at zero, so the first steps train the head alone (d tokens = d out W^T = 0).
"""
import numpy as np

from .errors import ACEError
from .validate import require_float, require_int

# Upper bound of epochs and batch sizes: beyond it a fine-tuning would run for days.
_MAX_COUNT = 10**6
SETTINGS = ("epochs", "batch", "lr", "head_lr", "weight_decay")


# ---------------------------------------------------------------- optimizer
class AdamW:
    """AdamW on NumPy arrays, the core's formula (Sources/ACE/AdamW.swift, PyTorch's): for every
    parameter p with gradient g, at step t,

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    with the decoupled weight decay on the parameters named in `decays` only (the core decays
    weight matrices, not biases or norms). The parameters are updated in place."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(self, params, decays=()):
        self.params = params
        self.decays = frozenset(decays)
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}
        self.t = 0

    def step(self, grads, lr, weight_decay=0.0):
        self.t += 1
        c1, c2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            if k in self.decays:
                p *= 1 - lr * weight_decay
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


# ---------------------------------------------------------------- heads
class TokenLinear:
    """out[b, i, j] = tokens[b, i, j] W + bias: (B, h, w, C) -> (B, h, w, S)."""

    def __init__(self, width, outputs):
        self.params = {"w": np.zeros((width, outputs)), "b": np.zeros(outputs)}
        self.decays = ("w",)

    def forward(self, tokens):
        self._tokens = tokens
        return tokens @ self.params["w"] + self.params["b"]

    def backward(self, d_out):
        t = self._tokens.reshape(-1, self._tokens.shape[-1])
        d = d_out.reshape(-1, d_out.shape[-1])
        self.grads = {"w": t.T @ d, "b": d.sum(axis=0)}
        return d_out @ self.params["w"].T


class Heatmap:
    """Heat-map logits of `points` key points at `upsample` times the token grid's resolution:
    each token (i, j) predicts, by one linear map, the r x r block of pixels it covers in every
    key point's map (r = upsample; a learned sub-pixel upsampling, the depth-to-space of ESPCN).
    (B, h, w, C) -> (B, K, h r, w r), heat-map pixel (y, x) covering input rows
    [y H / (h r), (y + 1) H / (h r)): output stride patch / r pixels of the encoder input."""

    def __init__(self, width, points, upsample):
        self.points, self.upsample = points, upsample
        self.linear = TokenLinear(width, points * upsample * upsample)
        self.params, self.decays = self.linear.params, self.linear.decays

    def forward(self, tokens):
        b, h, w, _ = tokens.shape
        r, k = self.upsample, self.points
        blocks = self.linear.forward(tokens).reshape(b, h, w, r, r, k)
        return blocks.transpose(0, 5, 1, 3, 2, 4).reshape(b, k, h * r, w * r)

    def backward(self, d_out):
        b, k, hr, wr = d_out.shape
        r = self.upsample
        d_blocks = d_out.reshape(b, k, hr // r, r, wr // r, r).transpose(0, 2, 4, 3, 5, 1)
        d_tokens = self.linear.backward(d_blocks.reshape(b, hr // r, wr // r, r * r * k))
        self.grads = self.linear.grads
        return d_tokens


class PooledLinear:
    """Class logits of the mean token: mean_ij(tokens[b, i, j]) W + bias, (B, h, w, C) -> (B, S)."""

    def __init__(self, width, classes):
        self.params = {"w": np.zeros((width, classes)), "b": np.zeros(classes)}
        self.decays = ("w",)

    def forward(self, tokens):
        self._shape = tokens.shape
        self._pooled = tokens.mean(axis=(1, 2))
        return self._pooled @ self.params["w"] + self.params["b"]

    def backward(self, d_out):
        self.grads = {"w": self._pooled.T @ d_out, "b": d_out.sum(axis=0)}
        b, h, w, c = self._shape
        d_pooled = d_out @ self.params["w"].T
        return np.broadcast_to((d_pooled / (h * w))[:, None, None, :], self._shape).copy()


# ---------------------------------------------------------------- losses: (loss, d loss / d out)
def sigmoid_cross_entropy(logits, targets):
    """Mean binary cross-entropy of sigmoid(logits) against soft targets in [0, 1]."""
    p = 1 / (1 + np.exp(-logits))
    loss = np.mean(np.logaddexp(0, logits) - targets * logits)
    return float(loss), (p - targets) / p.size


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) (B, S) against integer labels (B,)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    d = np.exp(log_p)
    d[rows, labels] -= 1
    return float(-log_p[rows, labels].mean()), d / len(labels)


def spatial_cross_entropy(logits, targets):
    """Cross-entropy of each map's spatial softmax (B, K, H, W) against a target distribution over
    its pixels (each (H, W) target sums to 1), averaged over the maps; maps whose target is NaN
    (a missing key point) are left out."""
    b, k = logits.shape[:2]
    flat, target = logits.reshape(b, k, -1), targets.reshape(b, k, -1)
    present = np.isfinite(target).all(axis=-1)
    count = max(int(present.sum()), 1)
    shifted = flat - flat.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    target = np.where(present[..., None], target, 0.0)
    loss = -(target * log_p).sum() / count
    d = np.where(present[..., None], np.exp(log_p) - target, 0.0) / count
    return float(loss), d.reshape(logits.shape)


# ---------------------------------------------------------------- the loop
def settings(overrides, name="finetune"):
    """Fine-tuning overrides (a dict of epochs, batch, lr, head_lr, weight_decay), checked by name
    and type; {} for None."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ACEError(f"{name} must be a dict of settings, got {type(overrides).__name__}")
    out = {}
    for key, value in overrides.items():
        if key in ("epochs", "batch"):
            out[key] = require_int(f"{name}[{key!r}]", value, 1 if key == "batch" else 0, _MAX_COUNT)
        elif key in ("lr", "head_lr", "weight_decay"):
            out[key] = require_float(f"{name}[{key!r}]", value, 0.0)
        else:
            raise ACEError(f"unknown {name} setting {key!r}; known: {', '.join(SETTINGS)}")
    return out


def token_map(model, features):
    """The patch tokens of a forward output as a float64 grid (B, h, w, C): a ViT's output starts
    with its class token, a Swin's holds only the final grid."""
    first = 0 if getattr(model, "is_swin", False) else 1
    g = model.token_grid
    return features[:, first:].astype(np.float64).reshape(len(features), g, g, -1)


def _d_features(model, shape, d_tokens):
    """d loss / d forward output from d loss / d tokens (the class token gets none)."""
    d = np.zeros(shape, np.float32)
    first = 0 if getattr(model, "is_swin", False) else 1
    d[:, first:] = d_tokens.reshape(shape[0], -1, shape[-1])
    return d


def finetune_end_to_end(enc, images, targets, head, loss, *, epochs=20, batch=8, lr=1e-4, head_lr=1e-2,
                        weight_decay=0.05, seed=0):
    """Train a copy of `enc` and `head` (in place) end to end on `images` and per-image `targets`
    (an array indexed like the images), minimizing `loss(head output, targets[batch])`; return
    the trained copy. The encoder takes the core's AdamW steps (learning rate `lr`), the head the
    same formula at `head_lr` (see `AdamW`), both with `weight_decay` on weight matrices. One
    epoch visits every image once, in an order drawn from `seed`. `enc` is left unchanged."""
    if len(images) != len(targets):
        raise ACEError(f"fine-tuning needs one target per image, got {len(images)} images "
                       f"and {len(targets)} targets")
    model = enc.copy()
    model.precision = enc.precision          # a copy starts at "auto"; fine-tune as the encoder computes
    x = model.preprocess(images)
    optimizer = AdamW(head.params, head.decays)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            features = model.forward_train(x[idx])
            _, d_out = loss(head.forward(token_map(model, features)), targets[idx])
            d_tokens = head.backward(d_out)
            model.backward(_d_features(model, features.shape, d_tokens))
            model.adamw_step(lr, weight_decay)
            optimizer.step(head.grads, head_lr, weight_decay)
    return model


def predict(model, head, images, batch=64):
    """The head's outputs on `images` through the (fine-tuned) encoder, in batches."""
    out = [head.forward(token_map(model, model.forward_features(model.preprocess(images[start:start + batch]))))
           for start in range(0, len(images), batch)]
    return np.concatenate(out)

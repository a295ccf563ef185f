"""Probes of the global embedding of images and crops (Figs. 3-5): compositionality,
decompositionality, retrieval."""
import math

import numpy as np
from sklearn.metrics.pairwise import cosine_similarity, paired_cosine_distances

from ..errors import ACEError
from ..validate import require_int
from .common import (_MAX_SAMPLES, _as_images, _check_batch, _check_patch, _check_seed, _cut, _global_features,
                     _random_origins, bootstrap_ci, resolve_features)


def _split(patches, parts):
    """Halves (left, right) or quadrants (row-major) of square patches (B, P, P)."""
    h = patches.shape[-1] // 2
    if parts == 2:
        return [patches[:, :, :h], patches[:, :, h:]]
    if parts == 4:
        return [patches[:, :h, :h], patches[:, :h, h:], patches[:, h:, :h], patches[:, h:, h:]]
    raise ACEError(f"parts must be 2 (halves) or 4 (quadrants), got {parts}")


def compositionality(enc, images, parts=4, n=200, patch=None, features="default", seed=0):
    """Fig. 3: is the embedding of a patch the mean of the embeddings of its parts?

    Samples `n` random square patches of side `patch` (default a quarter of the shorter
    image side, see `_default_patch`), each from a random image, splits each into its
    left/right halves (`parts=2`) or quadrants (`parts=4`), and measures
    cos(f(patch), mean_k f(part_k)). Every crop, whole or part, is resized by the encoder
    to its input size; halves are therefore stretched to a square.

    The cosine alone rewards embeddings that all point one way (random init scores about
    0.95), so beside it stands a control: the same cosine against the mean of the parts of
    the next sampled patch (another place, usually another image). "gap" is the mean of
    cosine minus control per patch: how much closer a patch is to its own parts than to
    others' parts.

    Returns {"mean", "ci95" (of the mean, resampling images), "std", "cosines": (n,),
    "control", "control_cosines": (n,), "gap", "gap_ci95", "image_index": (n,) the image
    of each patch, "n", "features"}.
    """
    x = _as_images(images)
    if require_int("parts", parts) not in (2, 4):
        raise ACEError(f"parts must be 2 (halves) or 4 (quadrants), got {parts}")
    n = require_int("n", n, 1, _MAX_SAMPLES)
    features = resolve_features(enc, features)
    patch = _check_patch(patch, x.shape[1:])
    if patch % 2:
        raise ACEError(f"patch must be even to split into halves or quadrants, got {patch}")
    rng = np.random.default_rng(_check_seed(seed))
    idx = rng.integers(0, len(x), n)
    patches = _cut(x[idx], _random_origins(rng, n, x.shape[1:], patch), patch)
    whole = _global_features(enc, patches, features)
    mean_parts = np.mean([_global_features(enc, p, features) for p in _split(patches, parts)], axis=0)
    cosines = 1.0 - paired_cosine_distances(whole, mean_parts)
    control = 1.0 - paired_cosine_distances(whole, np.roll(mean_parts, 1, axis=0))
    gap = cosines - control
    return {"mean": float(cosines.mean()), "ci95": bootstrap_ci(cosines, idx), "std": float(cosines.std()),
            "cosines": cosines, "control": float(control.mean()), "control_cosines": control,
            "gap": float(gap.mean()), "gap_ci95": bootstrap_ci(gap, idx),
            "image_index": idx, "n": int(n), "features": features}


def decompositionality(enc, images, batch=32, patch=None, trials=320, features="default", seed=0):
    """Fig. 4: does removing a patch from an image remove that patch's embedding?

    In each round `batch` distinct images X_j are drawn and a random square patch C_j
    (side `patch`, default as in `compositionality`) is chosen in each. C_j is excised by
    setting its pixels to the mean intensity of X_j (a neutral fill that adds no edges
    of its own beyond the patch outline), giving X_j'. With d_j = f(X_j) - f(X_j'), the
    decision for j is correct when argmax_k cos(d_j, f(C_k)) == j. Rounds are repeated
    until at least `trials` decisions are made.

    Returns {"accuracy", "ci95", "trials", "chance": 1 / batch, "features"} and the
    decisions, see `_accuracy`.
    """
    x, full, patch, features, rounds = _patch_rounds(enc, images, batch, patch, trials, features, seed)
    correct, images_of = [], []
    for idx, origins, crops in rounds:
        excised = x[idx].copy()
        for im, (y, x0) in zip(excised, origins):
            im[y:y + patch, x0:x0 + patch] = im.mean()
        d = full[idx] - _global_features(enc, excised, features)
        sims = cosine_similarity(d, _global_features(enc, crops, features))
        correct.append(sims.argmax(axis=1) == np.arange(batch))
        images_of.append(idx)
    return _accuracy(correct, images_of, batch, features)


def retrieval(enc, images, batch=32, patch=None, trials=320, features="default", seed=0):
    """Fig. 5: does a patch's embedding find the image it was cut from?

    In each round `batch` distinct images X_j are drawn and a random square patch C_j
    (side `patch`, default as in `compositionality`) is cut from each; the decision for
    j is correct when argmax_i cos(f(C_j), f(X_i)) == j over the images of the round.
    Rounds are repeated until at least `trials` decisions are made.

    Returns {"accuracy", "ci95", "trials", "chance": 1 / batch, "features"} and the
    decisions, see `_accuracy`.
    """
    _, full, _, features, rounds = _patch_rounds(enc, images, batch, patch, trials, features, seed)
    correct, images_of = [], []
    for idx, _, crops in rounds:
        sims = cosine_similarity(_global_features(enc, crops, features), full[idx])
        correct.append(sims.argmax(axis=1) == np.arange(batch))
        images_of.append(idx)
    return _accuracy(correct, images_of, batch, features)


def _patch_rounds(enc, images, batch, patch, trials, features, seed):
    """Shared set-up of the round-based probes: the images, their embeddings, the patch
    side, the features, and a generator of rounds (indices of `batch` distinct images,
    patch origins, the patches) until at least `trials` decisions."""
    x = _as_images(images)
    batch = _check_batch(batch, len(x))
    trials = require_int("trials", trials, 1, _MAX_SAMPLES)
    features = resolve_features(enc, features)
    patch = _check_patch(patch, x.shape[1:])
    rng = np.random.default_rng(_check_seed(seed))
    full = _global_features(enc, x, features)

    def rounds():
        for _ in range(math.ceil(trials / batch)):
            idx = rng.choice(len(x), batch, replace=False)
            origins = _random_origins(rng, batch, x.shape[1:], patch)
            yield idx, origins, _cut(x[idx], origins, patch)

    return x, full, patch, features, rounds()


def _accuracy(correct, images_of, batch, features):
    """Result of a round-based probe; `correct` (trials,) holds the decisions and `image_index`
    the image each patch was cut from, the unit the interval resamples."""
    correct, images_of = np.concatenate(correct), np.concatenate(images_of)
    return {"accuracy": float(correct.mean()), "ci95": bootstrap_ci(correct, images_of), "trials": int(correct.size),
            "chance": 1.0 / batch, "features": features, "correct": correct, "image_index": images_of}

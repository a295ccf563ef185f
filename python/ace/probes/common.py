"""What the probes share: input checks, the global embedding f(x) of images and crops, windows
around points, and the bootstrap intervals of every headline (see the package docstring)."""
import math
import warnings

import numpy as np

from ..errors import ACEError
from ..preprocess import to_unit_float
from ..validate import require_choice, require_float, require_int, require_real_array

# Crops are embedded in chunks of this many so that the token maps `embed` also returns
# (chunk x h x w x C floats) stay small.
_CHUNK = 256
# Upper bound of the sample counts (n, trials, pairs, k): beyond it a probe would run for days.
_MAX_SAMPLES = 10**6
# Seeds also reach scikit-learn, whose random_state takes 32-bit seeds.
_MAX_SEED = 2**32 - 1
# Confidence intervals of the probes' headlines: resamples and seed of `bootstrap_ci`, fixed so
# that the same trials always give the same interval, whatever seed drew the trials.
_RESAMPLES = 1000
_BOOTSTRAP_SEED = 0


# ---------------------------------------------------------------- shared helpers
def _as_images(images, name="images"):
    x = to_unit_float(images, name=name)
    if x.ndim != 3:
        raise ACEError(f"{name} must be grayscale (N, H, W), got shape {x.shape}")
    return x


def _as_landmarks(landmarks, images):
    """(N, L, 2) float64 x, y; NaN marks a missing landmark. Infinite values, no landmark at
    all, or none inside its image are refused: every probe result would be NaN or noise."""
    lm = require_real_array("landmarks", landmarks).astype(np.float64)
    if lm.ndim != 3 or lm.shape[0] != len(images) or lm.shape[2] != 2:
        raise ACEError(f"landmarks must be (N, L, 2) x, y with N = {len(images)} images, got shape {lm.shape}")
    if np.isinf(lm).any():
        raise ACEError("landmarks contain infinite values; mark a missing landmark with NaN")
    present = ~np.isnan(lm).any(-1)
    if not present.any():
        raise ACEError("landmarks are all NaN (missing): at least one landmark must be given")
    h, w = images.shape[1:3]
    x, y = lm[..., 0][present], lm[..., 1][present]
    # Pixel centres are at integers, so the image spans [-0.5, side - 0.5].
    if not ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).any():
        raise ACEError(f"landmarks: every landmark lies outside its image ({w} x {h} pixels); "
                       f"landmarks are x, y pixel coordinates")
    return lm


def resolve_features(enc, features):
    """The features a probe uses, "cls" or "mean": `features` itself, or for "default" the
    encoder's `default_features` (the representation its pretraining shapes; "cls" when the
    encoder does not say)."""
    require_choice("features", features, ("cls", "mean", "default"))
    if features == "default":
        return require_choice("the encoder's default_features", getattr(enc, "default_features", "cls"),
                              ("cls", "mean"))
    return features


def _check_seed(seed):
    return require_int("seed", seed, 0, _MAX_SEED)


def _global_features(enc, images, features):
    """f(x) of each image: its CLS token or its mean patch token, float64 (B, C)."""
    features = resolve_features(enc, features)
    out = []
    for start in range(0, len(images), _CHUNK):
        cls, tokens = enc.embed(images[start:start + _CHUNK])
        out.append(cls if features == "cls" else tokens.mean(axis=(1, 2)))
    out = np.concatenate(out).astype(np.float64)
    if not np.isfinite(out).all():
        raise ACEError("the encoder returned NaN or infinite embeddings")
    return out


def _default_patch(shape):
    """Side of the square patches of the global probes: a quarter of the shorter image side,
    even so that a patch splits exactly into halves and quadrants (128 px on 512 px images)."""
    return max(2, min(shape) // 8 * 2)


def _check_patch(patch, shape):
    if min(shape) < 2:
        raise ACEError(f"images of {shape[0]} x {shape[1]} pixels are too small for the patches of this probe")
    if patch is None:
        return _default_patch(shape)
    return require_int("patch", patch, 2, min(shape))


def _check_window(patch, shape):
    """Side of the windows around landmarks: at least 1, at most the longer image side."""
    return require_int("patch", patch, 1, max(shape))


def _random_origins(rng, n, shape, patch):
    """n top-left corners (y, x) of patch x patch squares inside images of `shape`."""
    return np.stack([rng.integers(0, shape[0] - patch + 1, n), rng.integers(0, shape[1] - patch + 1, n)], 1)


def _cut(images, origins, patch):
    """Square crops: images[j, y:y+patch, x:x+patch] for (y, x) = origins[j]."""
    return np.stack([im[y:y + patch, x:x + patch] for im, (y, x) in zip(images, origins)])


def _windows(image, centres, patch):
    """patch x patch windows of one image, (H, W) or colour (H, W, C), centred on `centres`
    (M, 2) x, y; zero-padded."""
    h, w = image.shape[:2]
    origins = np.rint(np.asarray(centres, np.float64) - (patch - 1) / 2).astype(int)
    # Clipping keeps every slice inside the padded image even for points off the image.
    xs = np.clip(origins[:, 0], -patch, w)
    ys = np.clip(origins[:, 1], -patch, h)
    padded = np.pad(image, [(patch, patch), (patch, patch)] + [(0, 0)] * (image.ndim - 2))
    return np.stack([padded[y + patch:y + 2 * patch, x + patch:x + 2 * patch] for x, y in zip(xs, ys)])


def _check_batch(batch, n):
    batch = require_int("batch", batch, 2, _MAX_SAMPLES)
    if n < batch:
        raise ACEError(f"batch={batch} needs at least {batch} distinct images, got {n}")
    return batch


def _nanmean(a, axis=None):
    # A landmark missing on every image has no error: NaN, without a warning per call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _nanmedian(a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a)


# ---------------------------------------------------------------- confidence intervals
def bootstrap_ci(values, groups=None, *, statistic=None, resamples=_RESAMPLES, level=0.95, seed=_BOOTSTRAP_SEED):
    """Percentile bootstrap interval [lo, hi] of a statistic of per-trial values, resampling
    groups of trials (images) with replacement.

    values: (n,) or (n, m) per-trial numbers. The default statistic is the mean of the
        finite entries (NaN marks a missing value, e.g. an unannotated landmark), computed
        for all resamples at once.
    groups: None (each trial is its own group), (n,) the group label of each trial, or
        (n, r) labels in r roles (e.g. the query and the key image of a landmark pair). A
        resample draws as many labels as there are distinct ones, with replacement, from
        all of them; a trial enters it as often as the product of its labels' draw counts,
        so a pair of images counts only when both images are drawn.
    statistic: None, or a function of the resampled rows of `values` (each row repeated as
        often as drawn) returning a number, NaN where undefined: e.g. the ROC AUC of
        (label, score) rows, undefined when a resample holds one class only.

    Resamples whose statistic is undefined (no trial drawn, one class) are left out; the
    interval is [nan, nan] when all are.
    """
    resamples = require_int("resamples", resamples, 1, _MAX_SAMPLES)
    level = require_float("level", level, 0.0, 1.0)
    values = np.asarray(values, np.float64) if statistic is None else np.asarray(values)
    n = len(values)
    if n == 0:
        return [math.nan, math.nan]
    labels = np.arange(n) if groups is None else np.asarray(groups)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != n:
        raise ACEError(f"groups must be (n,) or (n, roles) labels for n = {n} trials, got shape {labels.shape}")
    _, codes = np.unique(labels.ravel(), return_inverse=True)
    codes = codes.reshape(labels.shape)
    k = int(codes.max()) + 1
    if statistic is None:
        finite = np.isfinite(values.reshape(n, -1))
        sums = np.where(finite, values.reshape(n, -1), 0.0).sum(axis=1)
        counts = finite.sum(axis=1)
    rng = np.random.default_rng(_check_seed(seed))
    stats = []
    # Draw counts per label, (b, k); a chunk of b resamples keeps the (b, n, r) weights small.
    chunk = max(1, 2**22 // (n * codes.shape[1]))
    for start in range(0, resamples, chunk):
        draws = rng.multinomial(k, np.full(k, 1.0 / k), size=min(chunk, resamples - start))
        weights = draws[:, codes].prod(axis=-1)
        if statistic is None:
            with np.errstate(invalid="ignore", divide="ignore"):
                stats.append((weights @ sums) / (weights @ counts))
        else:
            stats.append([statistic(values[np.repeat(np.arange(n), w)]) if w.any() else math.nan
                          for w in weights])
    stats = np.concatenate(stats).astype(np.float64)
    if not np.isfinite(stats).any():
        return [math.nan, math.nan]
    lo, hi = np.nanpercentile(stats, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return [float(lo), float(hi)]


def _split_pair(name, value, what):
    """(images, labels) or (images, masks) of a train or test argument."""
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ACEError(f"{name} must be a pair ({what}), got {type(value).__name__}") from None
    return first, second

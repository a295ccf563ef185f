"""Probes of what an encoder has learned: the measurements of DESIGN.md section 6.

Every probe takes an encoder (anything with `config` and `embed(images)` like
`ace.Encoder`) and NumPy inputs, and returns a dict of plain numbers and arrays.
Accuracy-type probes put their headline under `accuracy`, with the number of
decisions (`trials`) and the chance level (`chance`) beside it. Every headline number
carries a 95% percentile bootstrap interval that resamples images (`ci95`; `auc_ci95`,
`dice_ci95` for the transfer probes; see `bootstrap_ci`): the images, not the trials cut
from them, are the independent units.

Conventions shared by the probes:

* Images are (N, H, W) arrays, uint8, uint16 or float in [0, 1]. Crops are cut from
  the float image and handed to `enc.embed`, which resizes each one to the
  encoder's input size.
* f(x), the embedding of an image or a crop, is its CLS token (`features="cls"`) or
  the mean of its patch tokens (`features="mean"`). The default, `features="default"`,
  is the representation the encoder's method trains, its `default_features` ("mean"
  for ACE, whose losses never touch the CLS token; "cls" for DINO-style), and "cls"
  for encoders without that attribute. Results name the choice under `features`.
* Coordinates are x, y pixels with pixel centres at integer positions, as in the
  JSRT landmarks and the phantom. A window of side P centred on (x, y) starts at
  pixel round(x - (P - 1) / 2); windows that reach past the border are zero-padded.
* Token (i, j) of an (h, w) token map covers rows [i H/h, (i+1) H/h) and columns
  [j W/w, (j+1) W/w) of the input image, so its centre is at
  x = (j + 0.5) W/w - 0.5, y = (i + 0.5) H/h - 0.5.
* Probes that sample are deterministic given `seed`.
"""
import math
import warnings

import numpy as np
import scipy.fft
from PIL import Image
from scipy import ndimage
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import accuracy_score, roc_auc_score, silhouette_score
from sklearn.metrics.pairwise import cosine_similarity, paired_cosine_distances, pairwise_distances_argmin
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import _native
from .errors import ACEError
from .preprocess import to_unit_float
from .validate import require_choice, require_float, require_int, require_real_array

__all__ = ["compositionality", "decompositionality", "retrieval", "landmark_correspondence",
           "template_matching_baseline", "landmark_embeddings", "symmetry", "linear_probe_classification",
           "fit_linear_probe",
           "segmentation", "dice", "bootstrap_ci", "resolve_features", "pair_correspondence"]

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


# ---------------------------------------------------------------- global embedding probes
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


# ---------------------------------------------------------------- landmarks
def _pair_list(n, pairs, rng):
    """Ordered (query, key) image pairs: all of them, or `pairs` drawn without replacement."""
    if n < 2:
        raise ACEError(f"landmark correspondence needs at least 2 images, got {n}")
    if pairs is not None:
        pairs = require_int("pairs", pairs, 1, _MAX_SAMPLES)
    every = np.array([(q, k) for q in range(n) for k in range(n) if q != k])
    if pairs is None:
        return every
    chosen = rng.choice(len(every), min(pairs, len(every)), replace=False)
    return every[np.sort(chosen)]


def _sample_tokens(tokens, rc):
    """Bilinear samples of a token map (h, w, C) at token-grid positions rc (M, 2) row, col."""
    c = tokens.shape[-1]
    coords = np.empty((3, len(rc), c))
    coords[0] = rc[:, :1]
    coords[1] = rc[:, 1:]
    coords[2] = np.arange(c)
    return ndimage.map_coordinates(tokens, coords, order=1).astype(np.float64)


def _dense_predictions(enc, images, landmarks, pair_idx, upsample):
    """Predicted key-image landmarks (P, L, 2) by nearest token features.

    The query feature of a landmark is the query's token map sampled bilinearly at the
    landmark. It is matched by L2 against the key's token map sampled bilinearly on a grid
    `upsample` times finer than the tokens, whose points include every token centre; the
    prediction is the best grid point, so it is quantized to patch_size / upsample pixels
    of the encoder input.
    """
    _, height, width = images.shape
    _, tokens = enc.embed(images)
    gh, gw = tokens.shape[1:3]
    sy, sx = height / gh, width / gw
    # Landmark positions in token-grid coordinates (row, col), token centres at integers.
    rc = np.stack([(landmarks[..., 1] + 0.5) / sy - 0.5, (landmarks[..., 0] + 0.5) / sx - 0.5], -1)
    rc = np.clip(rc, 0, [gh - 1, gw - 1])
    rows = np.arange((gh - 1) * upsample + 1) / upsample
    cols = np.arange((gw - 1) * upsample + 1) / upsample
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    grid_xy = np.stack([(grid[:, 1] + 0.5) * sx - 0.5, (grid[:, 0] + 0.5) * sy - 0.5], -1)
    present = ~np.isnan(landmarks).any(-1)
    query_feats = {q: _sample_tokens(tokens[q], rc[q, present[q]])
                   for q in np.unique(pair_idx[:, 0]) if present[q].any()}
    pred = np.full(pair_idx.shape[:1] + landmarks.shape[1:], np.nan)
    for k in np.unique(pair_idx[:, 1]):
        key_feats = _sample_tokens(tokens[k], grid)
        for p in np.flatnonzero(pair_idx[:, 1] == k):
            q = pair_idx[p, 0]
            if q in query_feats:
                pred[p, present[q]] = grid_xy[pairwise_distances_argmin(query_feats[q], key_feats)]
    return pred


def _window_predictions(enc, images, landmarks, pair_idx, patch, stride, features):
    """Predicted key-image landmarks (P, L, 2) by nearest window embeddings.

    The query is the embedding of the patch x patch window centred on the landmark; the
    key's windows start every `stride` pixels from -patch // 2 in x and y (so their
    centres cover the image), each is embedded, and the prediction is the centre of the
    window nearest by L2. Each key image's windows are embedded once for all its queries.
    """
    _, height, width = images.shape
    present = ~np.isnan(landmarks).any(-1)
    queries = np.unique(pair_idx[:, 0])
    query_feats = {q: _global_features(enc, _windows(images[q], landmarks[q, present[q]], patch), features)
                   for q in queries if present[q].any()}
    ys = np.arange(0, height, stride) - patch // 2 + (patch - 1) / 2
    xs = np.arange(0, width, stride) - patch // 2 + (patch - 1) / 2
    centres = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    pred = np.full(pair_idx.shape[:1] + landmarks.shape[1:], np.nan)
    for k in np.unique(pair_idx[:, 1]):
        key_feats = _global_features(enc, _windows(images[k], centres, patch), features)
        for p in np.flatnonzero(pair_idx[:, 1] == k):
            q = pair_idx[p, 0]
            if q in query_feats:
                pred[p, present[q]] = centres[pairwise_distances_argmin(query_feats[q], key_feats)]
    return pred


def landmark_correspondence(enc, images, landmarks, method="dense", patch=64, stride=8, pairs=None,
                            upsample=4, features="default", seed=0):
    """Fig. 7: zero-shot landmark correspondence between images.

    For an ordered pair (query q, key k) each landmark of q is located in k by nearest
    features, and the error is the distance from the prediction to k's true landmark,
    in pixels of the input images.

    method="dense": patch-token features, bilinearly sampled (see `_dense_predictions`;
        `upsample` sets the sub-token search grid). One forward pass per image.
    method="window": the global embedding (`features`) of a patch x patch window centred
        on the landmark against windows of k every `stride` pixels (see
        `_window_predictions`). One forward pass per window: slow on large images. The
        paper's protocol is a 224 px window on 512 px images (448 on 1024).

    landmarks: (N, L, 2) x, y on `images` (N, H, W); NaN marks a missing landmark, whose
    errors are NaN and left out of the means. Every image is the query against every
    other image, or `pairs` random ordered pairs are used; `template_matching_baseline`
    with the same images, `pairs` and `seed` measures a raw-pixel reference on the same pairs.

    Returns {"mean_error", "ci95" (of the mean error, resampling images: a pair counts as
    often as both its images are drawn), "median_error", "per_landmark": (L,), "errors":
    (P, L); "identity_error" (the mean error of predicting the query's own coordinates: a
    reference that uses no features) with "identity_ci95", "identity_median_error",
    "identity_per_landmark", "identity_errors"; "pairs": P, "pair_indices": (P, 2) query,
    key, "predicted": (P, L, 2) x, y in the key; "features": "tokens" for dense, else the
    window embedding used; the settings "upsample" (dense) or "patch" and "stride"}.
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    require_choice("method", method, ("dense", "window"))
    pair_idx = _pair_list(len(x), pairs, np.random.default_rng(_check_seed(seed)))
    if method == "dense":
        upsample = require_int("upsample", upsample, 1, 64)
        pred = _dense_predictions(enc, x, lm, pair_idx, upsample)
        return _landmark_result(pred, lm, pair_idx, features="tokens", upsample=upsample)
    patch = _check_window(patch, x.shape[1:])
    stride = require_int("stride", stride, 1, max(x.shape[1:]))
    features = resolve_features(enc, features)
    pred = _window_predictions(enc, x, lm, pair_idx, patch, stride, features)
    return _landmark_result(pred, lm, pair_idx, features=features, patch=patch, stride=stride)


def _landmark_result(pred, landmarks, pair_idx, **settings):
    """Errors of predicted key landmarks (P, L, 2), beside the reference without features
    (predicting the query's own coordinates in the key image), and the probe's settings."""
    errors = np.linalg.norm(pred - landmarks[pair_idx[:, 1]], axis=-1)
    identity = np.linalg.norm(landmarks[pair_idx[:, 0]] - landmarks[pair_idx[:, 1]], axis=-1)
    return {"mean_error": float(_nanmean(errors)), "ci95": bootstrap_ci(errors, pair_idx),
            "median_error": float(_nanmedian(errors)), "per_landmark": _nanmean(errors, axis=0), "errors": errors,
            "identity_error": float(_nanmean(identity)), "identity_ci95": bootstrap_ci(identity, pair_idx),
            "identity_median_error": float(_nanmedian(identity)),
            "identity_per_landmark": _nanmean(identity, axis=0), "identity_errors": identity,
            "pairs": len(pair_idx), "pair_indices": pair_idx, "predicted": pred, **settings}


def template_matching_baseline(images, landmarks, patch=64, pairs=None, seed=0):
    """A landmark correspondence reference that learns nothing: raw-pixel normalized
    cross-correlation (NCC) of a template.

    For an ordered pair (query q, key k) the template of a landmark is the patch x patch
    window of q centred on it (as in `landmark_correspondence`, zero-padded past the
    border). Its NCC, the Pearson correlation of the pixels, is computed with every
    patch x patch window lying inside k (see `_Templates.ncc`), and the prediction is the
    centre of the best one. The pairs are those `landmark_correspondence` draws from the same number
    of images with the same `pairs` and `seed`, so the two compare pair by pair.

    Returns the dict of `landmark_correspondence`, with "features": "pixels" and "patch".
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    patch = require_int("patch", patch, 1, min(x.shape[1:]))
    pair_idx = _pair_list(len(x), pairs, np.random.default_rng(_check_seed(seed)))
    present = ~np.isnan(lm).any(-1)
    pred = np.full(pair_idx.shape[:1] + lm.shape[1:], np.nan)
    keys = {}                          # each key image's FFT and window norms, computed once
    # The FFTs take as many threads as the core (ace.set_num_threads, `ace evaluate --threads`).
    with scipy.fft.set_workers(_native.get_num_threads()):
        for q in np.unique(pair_idx[:, 0]):
            if not present[q].any():
                continue
            templates = _Templates(_windows(x[q], lm[q, present[q]], patch), x.shape[1:])
            for p in np.flatnonzero(pair_idx[:, 0] == q):
                k = pair_idx[p, 1]
                if k not in keys:
                    keys[k] = _KeyImage(x[k], patch, templates.fft_shape)
                pred[p, present[q]] = templates.best_centres(keys[k])
    return _landmark_result(pred, lm, pair_idx, features="pixels", patch=patch)


# Windows whose pixel standard deviation is below this (on [0, 1] intensities, a quarter of an
# 8-bit grey level) count as flat: their NCC is undefined, taken as 0, rather than the
# float32 rounding noise of the FFT divided by almost nothing.
_FLAT = 1e-3


def _inverse_norms(std, patch):
    """1 / the norm of the deviations from the mean of patch x patch windows with pixel
    standard deviations `std`, float32; 0 for flat windows, whose NCC is taken as 0."""
    with np.errstate(divide="ignore"):
        return np.where(std < _FLAT, 0.0, 1.0 / (std * patch)).astype(np.float32)


def _window_sums(values, patch):
    """Sums of every patch x patch window lying inside `values` (H, W), by integral image."""
    c = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[patch:, patch:] - c[:-patch, patch:] - c[patch:, :-patch] + c[:-patch, :-patch]


class _KeyImage:
    """A key image for NCC: the FFT of its zero-mean pixels and, for every patch x patch
    window inside it (top-left corners (i, j), i <= H - patch, j <= W - patch), the inverse
    norm of the window's deviations from its own mean (integral images in float64)."""

    def __init__(self, image, patch, fft_shape):
        centred = image.astype(np.float64) - image.mean()
        self.fft = scipy.fft.rfft2(centred.astype(np.float32), fft_shape)
        self.valid = (image.shape[0] - patch + 1, image.shape[1] - patch + 1)
        mean, mean_square = (_window_sums(v, patch) / patch ** 2 for v in (centred, centred ** 2))
        self.inverse_norm = _inverse_norms(np.sqrt(np.maximum(mean_square - mean ** 2, 0.0)), patch)


class _Templates:
    """Templates (T, P, P), each made zero-mean and divided by the norm of its pixels'
    deviations (0 when flat), as the conjugates of their FFTs zero-padded to a fast FFT size
    no smaller than the key images, so that correlation at valid windows does not wrap."""

    def __init__(self, templates, key_shape):
        self.patch = templates.shape[-1]
        self.fft_shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in key_shape)
        t = templates.astype(np.float64)
        t -= t.mean(axis=(1, 2), keepdims=True)
        t *= _inverse_norms(np.sqrt((t ** 2).mean(axis=(1, 2))), self.patch)[:, None, None]
        self.conj_fft = np.conj(scipy.fft.rfft2(t.astype(np.float32), self.fft_shape))

    def ncc(self, key, chunk=32):
        """(T, H - P + 1, W - P + 1) NCC of each template with every window inside `key`.

        With zero-mean templates, sum((K - mean K) T) = sum(K T): the correlation of the
        key with each normalized template (the inverse FFT of conj(FFT(T)) FFT(K)), times
        the key window's inverse norm, is the NCC. Undefined ones (a flat template or
        window) are 0."""
        out = np.empty((len(self.conj_fft),) + key.valid, np.float32)
        for start in range(0, len(out), chunk):
            corr = scipy.fft.irfft2(self.conj_fft[start:start + chunk] * key.fft, self.fft_shape)
            np.multiply(corr[:, :key.valid[0], :key.valid[1]], key.inverse_norm, out=out[start:start + chunk])
        return out

    def best_centres(self, key):
        """x, y centre of the best NCC window of each template (T, 2); ties go to the first
        window in row-major order, so a flat template predicts the top-left window."""
        scores = self.ncc(key)
        rows, cols = np.unravel_index(scores.reshape(len(scores), -1).argmax(axis=1), scores.shape[1:])
        return np.stack([cols, rows], axis=-1) + (self.patch - 1) / 2


def _landmark_windows(images, landmarks, patch):
    """Windows around every present landmark, with their image index and landmark id."""
    present = ~np.isnan(landmarks).any(-1)
    image_index, ids = np.nonzero(present)
    windows = np.concatenate([_windows(images[i], landmarks[i, present[i]], patch)
                              for i in range(len(images)) if present[i].any()])
    return windows, image_index, ids


def landmark_embeddings(enc, images, landmarks, k=5, patch=64, features="default", tsne=True, seed=0):
    """Fig. 6: are the embeddings of different anatomical landmarks distinct?

    Embeds the patch x patch window centred on every present landmark and measures how
    well the embedding identifies the landmark:

    * accuracy: k-nearest-neighbour (L2) landmark-identity accuracy, leave-one-image-out
      (each image's landmarks are classified by the other images' landmarks);
      `knn_accuracy` is the same number, `ci95` its interval resampling images, `correct`
      (M,) the decisions. chance is the most frequent id's share.
    * silhouette: scikit-learn silhouette score of the embeddings with ids as clusters.
    * tsne: (M, 2) t-SNE of the embeddings (perplexity min(30, (M - 1) / 3)), or None when
      `tsne=False`.

    Returns also `embeddings` (M, C), `ids` (M,) landmark index, `image_index` (M,).
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    k = require_int("k", k, 1, _MAX_SAMPLES)
    patch = _check_window(patch, x.shape[1:])
    features = resolve_features(enc, features)
    if not isinstance(tsne, (bool, np.bool_)):
        raise ACEError(f"tsne must be True or False, got {tsne!r}")
    seed = _check_seed(seed)
    windows, image_index, ids = _landmark_windows(x, lm, patch)
    if len(np.unique(image_index)) < 2 or len(np.unique(ids)) < 2:
        raise ACEError("landmark_embeddings needs landmarks on at least 2 images and at least 2 landmark ids")
    emb = _global_features(enc, windows, features)
    # scikit-learn's t-SNE crashes the interpreter (segmentation fault) when every point is
    # the same, e.g. when all windows are blank: refuse that before calling it.
    if tsne and not np.abs(emb - emb[0]).max() > 1e-6 * max(1.0, np.abs(emb).max()):
        raise ACEError("landmark_embeddings: every landmark window has the same embedding (are the landmarks "
                       "inside the images?); t-SNE needs at least 2 distinct points (pass tsne=False to skip it)")
    # Every training fold must hold at least k points.
    k = min(k, len(ids) - np.bincount(image_index).max())
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=k), emb, ids, groups=image_index,
                             cv=LeaveOneGroupOut())
    correct = pred == ids
    sil = float(silhouette_score(emb, ids)) if len(np.unique(ids)) < len(ids) else float("nan")
    coords = None
    if tsne:
        perplexity = min(30.0, (len(ids) - 1) / 3)
        # PCA initialization (the stable choice) needs at least two feature dimensions.
        init = "pca" if emb.shape[1] >= 2 else "random"
        coords = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(emb)
    acc = float(correct.mean())
    return {"accuracy": acc, "knn_accuracy": acc, "ci95": bootstrap_ci(correct, image_index), "trials": len(ids),
            "chance": float(np.bincount(ids).max() / len(ids)), "silhouette": sil, "k": k, "features": features,
            "correct": correct, "embeddings": emb.astype(np.float32), "ids": ids, "image_index": image_index,
            "tsne": coords}


def symmetry(enc, images, landmarks, pairs, patch=64, features="default"):
    """Fig. 11: do mirrored structures embed alike?

    `pairs` lists (left, right) landmark indices of mirror structures. For each image and
    pair with both landmarks present, the patch x patch window around the left landmark is
    flipped horizontally and matched by L2 against the windows around all right-side
    landmarks (the second entries of `pairs`) present in the same image; the decision is
    correct when the nearest one is the partner. chance is the mean of 1 / candidates.

    Returns {"accuracy", "ci95" (resampling images), "trials", "chance", "features",
    "correct": (trials,) the decisions, "image_index": (trials,) their images}.
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    pairs = _landmark_pairs(pairs, lm.shape[1])
    patch = _check_window(patch, x.shape[1:])
    features = resolve_features(enc, features)
    present = ~np.isnan(lm).any(-1)
    right = np.unique(pairs[:, 1])
    correct, chance, image_index = [], [], []
    for i in range(len(x)):
        candidates = right[present[i, right]]
        queries = pairs[present[i, pairs[:, 0]] & present[i, pairs[:, 1]]]
        if len(queries) == 0:
            continue
        flipped = _windows(x[i], lm[i, queries[:, 0]], patch)[:, :, ::-1]
        nearest = pairwise_distances_argmin(_global_features(enc, flipped, features),
                                            _global_features(enc, _windows(x[i], lm[i, candidates], patch), features))
        correct.extend(candidates[nearest] == queries[:, 1])
        chance.extend([1.0 / len(candidates)] * len(queries))
        image_index.extend([i] * len(queries))
    if not correct:
        raise ACEError("no image has both landmarks of any pair")
    correct, image_index = np.array(correct), np.array(image_index)
    return {"accuracy": float(correct.mean()), "ci95": bootstrap_ci(correct, image_index), "trials": len(correct),
            "chance": float(np.mean(chance)), "features": features, "correct": correct, "image_index": image_index}


def _landmark_pairs(pairs, n_landmarks):
    """(P, 2) int landmark index pairs, each index in [0, n_landmarks)."""
    a = require_real_array("pairs", pairs)
    if a.size == 0:
        raise ACEError("pairs is empty: give (left, right) landmark index pairs")
    if a.dtype.kind not in "iu":
        raise ACEError(f"pairs must hold integer landmark indices, got dtype {a.dtype}")
    if not (a.shape == (2,) or (a.ndim == 2 and a.shape[1] == 2)):
        raise ACEError(f"pairs must be (P, 2) (left, right) landmark indices, got shape {a.shape}")
    if a.min() < 0 or a.max() >= n_landmarks:
        raise ACEError(f"pairs must be landmark indices in [0, {n_landmarks - 1}], "
                       f"got values in [{a.min()}, {a.max()}]")
    return a.reshape(-1, 2).astype(int)


def _split_pair(name, value, what):
    """(images, labels) or (images, masks) of a train or test argument."""
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ACEError(f"{name} must be a pair ({what}), got {type(value).__name__}") from None
    return first, second


# ---------------------------------------------------------------- transfer
def linear_probe_classification(enc, train, test, features="default", C=1.0):
    """Frozen-feature classification (e.g. JSRT nodule vs no nodule).

    train and test are (images, labels). A logistic regression (scikit-learn, features
    standardized on the training set, inverse regularization `C`) is fitted on the
    frozen f(x) of the training images. auc is the ROC AUC on the test set (one-vs-rest
    for more than two classes), accuracy the share of correct labels; chance is the most
    frequent test label's share. auc_ci95 resamples the test images.

    Returns {"auc", "auc_ci95", "accuracy", "trials", "chance", "n_train", "n_test", "features"}.
    """
    x_train, y_train = _split_pair("train", train, "images, labels")
    x_test, y_test = _split_pair("test", test, "images, labels")
    x_train, x_test = _as_images(x_train, "train images"), _as_images(x_test, "test images")
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.shape != (len(x),):
            raise ACEError(f"{name} labels must be one per image, shape ({len(x)},), got shape {y.shape}")
        if len(np.unique(y)) < 2:
            raise ACEError(f"{name} labels must hold at least 2 classes (for the fit and the ROC AUC), "
                           f"got only {np.unique(y).tolist()}")
    C = require_float("C", C, positive=True)
    features = resolve_features(enc, features)
    f_train = _global_features(enc, x_train, features)
    f_test = _global_features(enc, x_test, features)
    return dict(fit_linear_probe(f_train, y_train, f_test, y_test, C), features=features)


def fit_linear_probe(f_train, y_train, f_test, y_test, C=1.0):
    """The linear probe on given features (N, D): a logistic regression (features
    standardized on the training set, inverse regularization `C`) fitted on the training
    rows, scored on the test rows as in `linear_probe_classification` (both need at least two
    classes). Returns {"auc", "auc_ci95", "accuracy", "trials", "chance", "n_train", "n_test"}."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(f_train, y_train)
    # Rows (class index, probabilities) of the test images: what the bootstrap resamples.
    rows = np.column_stack([np.searchsorted(clf.classes_, y_test), clf.predict_proba(f_test)])
    _, counts = np.unique(y_test, return_counts=True)
    return {"auc": _auc(rows), "auc_ci95": bootstrap_ci(rows, statistic=_auc),
            "accuracy": float(accuracy_score(y_test, clf.predict(f_test))),
            "trials": len(y_test), "chance": float(counts.max() / len(y_test)),
            "n_train": len(y_train), "n_test": len(y_test)}


def _auc(rows):
    """ROC AUC (one-vs-rest past two classes) of (class index, class probabilities) rows;
    NaN unless every class occurs. Two classes: the Mann-Whitney U statistic from mid-ranks
    (equal to scikit-learn's AUC, without its checks, which dominate 1000 bootstrap resamples)."""
    labels, proba = rows[:, 0].astype(int), rows[:, 1:]
    if len(np.unique(labels)) < proba.shape[1]:
        return math.nan
    if proba.shape[1] == 2:
        positive = labels == 1
        n_pos, n_neg = positive.sum(), (~positive).sum()
        return float((rankdata(proba[:, 1])[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(roc_auc_score(labels, proba, multi_class="ovr", labels=np.arange(proba.shape[1])))


def dice(pred, target):
    """Dice overlap 2 |P & T| / (|P| + |T|) of two boolean masks; 1 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ACEError(f"masks differ in shape: {pred.shape} vs {target.shape}")
    total = pred.sum() + target.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, target).sum() / total)


def _mask_dict(masks, structures, n):
    """{name: bool (N, H, W)} from a dict or an (N, S, H, W) array with `structures` names."""
    if isinstance(masks, dict):
        names = list(structures) if structures is not None else list(masks)
        missing = [name for name in names if name not in masks]
        if missing:
            raise ACEError(f"masks have no structure {missing}; they hold {list(masks)}")
        out = {name: np.asarray(masks[name], bool) for name in names}
    else:
        a = np.asarray(masks, bool)
        if a.ndim != 4:
            raise ACEError(f"mask arrays must be (N, S, H, W), got shape {a.shape}")
        names = list(structures) if structures is not None else [str(s) for s in range(a.shape[1])]
        if len(names) != a.shape[1]:
            raise ACEError(f"{len(names)} structure names for {a.shape[1]} mask channels")
        out = {name: a[:, s] for s, name in enumerate(names)}
    if not out:
        raise ACEError("masks hold no structure")
    for name, m in out.items():
        if m.ndim != 3 or len(m) != n or 0 in m.shape:
            raise ACEError(f"masks of {name!r} must be (N, H, W) with N = {n}, got shape {m.shape}")
    return out


def _area_fraction(masks, grid):
    """Share of each token's area covered by the mask: (N, H, W) bool -> (N, gh, gw).
    Pillow's box filter averages the pixels whose centres fall in each token."""
    size = (grid[1], grid[0])
    return np.clip(np.stack([np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(size, Image.BOX))
                             for m in masks]), 0.0, 1.0)


def _fit_token_classifier(features, fraction, C):
    """Logistic regression of token features on soft labels (covered area fractions).

    Each token enters as a positive with weight `fraction` and a negative with weight
    1 - fraction: the cross-entropy of a prediction that is constant over the token,
    summed over its pixels. Returns a function features -> probability. With no
    positive (or no negative) area at all the prediction is that constant.
    """
    pos, neg = fraction > 0, fraction < 1
    if not pos.any() or not neg.any():
        constant = float(pos.any())
        return lambda f: np.full(len(f), constant)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    clf.fit(np.concatenate([features[pos], features[neg]]),
            np.concatenate([np.ones(pos.sum()), np.zeros(neg.sum())]),
            logisticregression__sample_weight=np.concatenate([fraction[pos], 1.0 - fraction[neg]]))
    return lambda f: clf.predict_proba(f)[:, 1]


def segmentation(enc, train, test, mode="linear", shots=None, structures=None, C=1.0, seed=0, finetune=None):
    """Fig. 8 / Table 1: frozen-encoder segmentation with a linear head on patch tokens.

    train and test are (images, masks), masks a dict name -> bool (N, H, W) or an
    (N, S, H, W) array named by `structures`. For each structure a logistic regression
    maps a patch token to the probability that its area is covered, trained on soft
    labels (the covered fraction of each token, see `_fit_token_classifier`). Test
    probabilities are upsampled bilinearly from the token grid to the mask size
    (scipy.ndimage.zoom, token centres aligned) and thresholded at 0.5; Dice is computed
    per test image. `shots` keeps the first `shots` training images after a shuffle
    seeded by `seed` (few-shot); None uses them all.

    mode="finetune": a copy of the encoder is trained end to end with a per-token linear
    head (one logit per structure, the same soft labels, mean binary cross-entropy) through
    the core's backward pass, see `_finetune`; the original encoder is left unchanged.
    `finetune` overrides its settings (epochs, batch, lr, head_lr, weight_decay).

    Returns {"dice": {name: mean}, "dice_ci95": {name: [lo, hi]} resampling test images,
    "dice_per_image": {name: (N_test,)}, "shots": n_train_used}.
    """
    require_choice("mode", mode, ("linear", "finetune"))
    x_train, m_train = _split_pair("train", train, "images, masks")
    x_test, m_test = _split_pair("test", test, "images, masks")
    x_train, x_test = _as_images(x_train, "train images"), _as_images(x_test, "test images")
    m_train = _mask_dict(m_train, structures, len(x_train))
    m_test = _mask_dict(m_test, structures, len(x_test))
    if list(m_train) != list(m_test):
        raise ACEError(f"train and test masks must name the same structures, got {list(m_train)} and {list(m_test)}")
    C = require_float("C", C, positive=True)
    finetune = _finetune_settings(finetune)
    order = np.random.default_rng(_check_seed(seed)).permutation(len(x_train))
    if shots is not None:
        order = order[:require_int("shots", shots, 1, len(x_train))]
    cfg = enc.config
    # The token grid: img_size / patch for a ViT, the final stage's grid for a Swin.
    grid = (getattr(enc, "token_grid", None) or cfg["img_size"] // cfg["patch_size"],) * 2
    if mode == "finetune":
        fractions = np.stack([_area_fraction(m[order], grid) for m in m_train.values()], axis=-1)
        probs = _finetune(enc, x_train[order], fractions, x_test, seed=seed, **finetune)
    else:
        _, t_train = enc.embed(x_train[order])
        _, t_test = enc.embed(x_test)
        f_train = t_train.reshape(-1, t_train.shape[-1]).astype(np.float64)
        f_test = t_test.reshape(-1, t_test.shape[-1]).astype(np.float64)
        probs = np.stack([_fit_token_classifier(f_train, _area_fraction(m[order], grid).ravel(), C)(f_test)
                          for m in m_train.values()], axis=-1).reshape((len(x_test),) + grid + (len(m_train),))
    mean_dice, per_image = {}, {}
    for s, name in enumerate(m_train):
        target = m_test[name]
        zoom = (target.shape[1] / grid[0], target.shape[2] / grid[1])
        scores = [dice(ndimage.zoom(p, zoom, order=1, grid_mode=True, mode="nearest") > 0.5, t)
                  for p, t in zip(probs[..., s], target)]
        per_image[name] = np.array(scores)
        mean_dice[name] = float(np.mean(scores))
    return {"dice": mean_dice, "dice_ci95": {name: bootstrap_ci(v) for name, v in per_image.items()},
            "dice_per_image": per_image, "shots": len(order)}


def _finetune_settings(settings):
    """The `finetune` overrides of `segmentation`, checked by name and type."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ACEError(f"finetune must be a dict of settings, got {type(settings).__name__}")
    out = {}
    for key, value in settings.items():
        if key in ("epochs", "batch"):
            out[key] = require_int(f"finetune[{key!r}]", value, 1 if key == "batch" else 0, _MAX_SAMPLES)
        elif key in ("lr", "head_lr", "weight_decay"):
            out[key] = require_float(f"finetune[{key!r}]", value, 0.0)
        else:
            raise ACEError(f"unknown finetune setting {key!r}; known: epochs, batch, lr, head_lr, weight_decay")
    return out


def _finetune(enc, images, fractions, test_images, *, epochs=20, batch=8, lr=1e-4, head_lr=1e-2,
              weight_decay=0.05, seed=0):
    """Train a copy of `enc` and a per-token linear head end to end; return the test
    probabilities (N_test, gh, gw, S).

    Loss: mean binary cross-entropy of sigmoid(tokens W + b) against the covered area
    fractions. Its gradient reaches the tokens as dL/dtokens = dlogits W^T and goes through
    the core's backward pass; the encoder takes AdamW steps in the core, the head Adam steps
    here. The head starts at zero, so the first steps train it alone.
    """
    model = enc.copy()
    x = model.preprocess(images)
    n, s = len(x), fractions.shape[-1]
    y = fractions.reshape(n, -1, s)
    # A ViT's output starts with its class token; a Swin's holds only the final grid.
    first = 0 if getattr(model, "is_swin", False) else 1
    head = {"w": np.zeros((model.width, s)), "b": np.zeros(s)}
    adam = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in head.items()}
    rng = np.random.default_rng(seed)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            feats = model.forward_train(x[idx])
            tokens = feats[:, first:].astype(np.float64)
            prob = 1 / (1 + np.exp(-(tokens @ head["w"] + head["b"])))
            d_logits = (prob - y[idx]) / prob.size
            d_feats = np.zeros_like(feats)
            d_feats[:, first:] = d_logits @ head["w"].T
            model.backward(d_feats)
            model.adamw_step(lr, weight_decay)
            step += 1
            grads = {"w": np.einsum("btc,bts->cs", tokens, d_logits), "b": d_logits.sum(axis=(0, 1))}
            for k, g in grads.items():
                m, v = adam[k]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                head[k] -= head_lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    _, tokens = model.embed(test_images)
    return 1 / (1 + np.exp(-(tokens.astype(np.float64) @ head["w"] + head["b"])))


# ---------------------------------------------------------------- image pairs (FIRE)
def pair_correspondence(enc, query_images, key_images, query_points, key_points, patch=64, stride=8,
                        features="default", max_threshold=25):
    """Fig. 10 (FIRE): control points of a query image located in the other image of its pair.

    Pair i is query_images[i] and key_images[i] (grayscale (H, W) or colour (H, W, 3), as
    the encoder takes them: a grayscale encoder sees colour as luminance), with control
    points query_points[i] and key_points[i] ((M_i, 2) x, y; row j of both is the same
    place). Each query point's patch x patch window is embedded (`features`) and compared by
    L2 with windows of the key image every `stride` pixels; the prediction is the centre of
    the nearest window, the error its distance to the key point.

    Returns {"mean_error", "median_error", "ci95" (of the mean error, resampling pairs),
    "success": {t: fraction of points with error <= t} for t = 1 ... max_threshold px,
    "auc": the mean success rate over those thresholds (FIRE's area under the curve),
    "identity_error" (predicting the query coordinates: the reference without features)
    with "identity_auc", "errors" (list per pair), "pairs", "points", "features",
    "patch", "stride"}.
    """
    pairs = _image_pairs(query_images, key_images, query_points, key_points)
    require_int("patch", patch, 1, 4096)
    stride = require_int("stride", stride, 1, 4096)
    max_threshold = require_int("max_threshold", max_threshold, 1, 10**4)
    features = resolve_features(enc, features)
    errors, identity = [], []
    for query, key, q_pts, k_pts in pairs:
        height, width = key.shape[:2]
        centres = np.stack(np.meshgrid(np.arange(0, width, stride) - patch // 2 + (patch - 1) / 2,
                                       np.arange(0, height, stride) - patch // 2 + (patch - 1) / 2), -1).reshape(-1, 2)
        key_feats = _global_features(enc, _windows(key, centres, patch), features)
        query_feats = _global_features(enc, _windows(query, q_pts, patch), features)
        pred = centres[pairwise_distances_argmin(query_feats, key_feats)]
        errors.append(np.linalg.norm(pred - k_pts, axis=1))
        identity.append(np.linalg.norm(q_pts - k_pts, axis=1))
    thresholds = np.arange(1, max_threshold + 1)
    flat, flat_identity = np.concatenate(errors), np.concatenate(identity)
    success = {int(t): float((flat <= t).mean()) for t in thresholds}
    groups = np.concatenate([np.full(len(e), i) for i, e in enumerate(errors)])
    return {"mean_error": float(flat.mean()), "median_error": float(np.median(flat)),
            "ci95": bootstrap_ci(flat, groups), "success": success, "auc": float(np.mean(list(success.values()))),
            "identity_error": float(flat_identity.mean()),
            "identity_auc": float(np.mean([(flat_identity <= t).mean() for t in thresholds])),
            "errors": errors, "pairs": len(pairs), "points": int(flat.size), "features": features,
            "patch": patch, "stride": stride}


def _image_pairs(query_images, key_images, query_points, key_points):
    """[(query, key, query points, key points)] checked: equal counts, float images in
    [0, 1] of 2 or 3 dimensions, (M, 2) finite points with M >= 1 matching per pair."""
    lists = [list(query_images), list(key_images), list(query_points), list(key_points)]
    if len({len(x) for x in lists}) != 1 or not lists[0]:
        raise ACEError(f"pair_correspondence needs as many key images and point sets as query images (at least "
                       f"one), got {[len(x) for x in lists]}")
    out = []
    for i, (q, k, qp, kp) in enumerate(zip(*lists)):
        q, k = (to_unit_float(np.asarray(im)[None], name=f"pair {i} image")[0] for im in (q, k))
        if q.ndim not in (2, 3) or k.ndim not in (2, 3):
            raise ACEError(f"pair {i}: images must be (H, W) or (H, W, C), got {q.shape} and {k.shape}")
        qp, kp = (require_real_array(f"pair {i} points", p).astype(np.float64) for p in (qp, kp))
        if qp.ndim != 2 or qp.shape[1] != 2 or qp.shape != kp.shape or len(qp) == 0:
            raise ACEError(f"pair {i}: query and key points must both be (M, 2) x, y with M >= 1, "
                           f"got {qp.shape} and {kp.shape}")
        if not (np.isfinite(qp).all() and np.isfinite(kp).all()):
            raise ACEError(f"pair {i}: points must be finite")
        out.append((q, k, qp, kp))
    return out

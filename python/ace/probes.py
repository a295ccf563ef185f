"""Probes of what an encoder has learned: the measurements of DESIGN.md section 6.

Every probe takes an encoder (anything with `config` and `embed(images)` like
`ace.Encoder`) and NumPy inputs, and returns a dict of plain numbers and arrays.
Accuracy-type probes put their headline under `accuracy`, with the number of
decisions (`trials`) and the chance level (`chance`) beside it.

Conventions shared by the probes:

* Images are (N, H, W) arrays, uint8, uint16 or float in [0, 1]. Crops are cut from
  the float image and handed to `enc.embed`, which resizes each one to the
  encoder's input size.
* f(x), the embedding of an image or a crop, is its CLS token by default
  (`features="cls"`): the global embedding ACE trains. `features="mean"` uses the
  mean of the patch tokens instead.
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
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import accuracy_score, roc_auc_score, silhouette_score
from sklearn.metrics.pairwise import cosine_similarity, paired_cosine_distances, pairwise_distances_argmin
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .errors import ACEError
from .preprocess import to_unit_float
from .validate import require_choice, require_float, require_int, require_real_array

__all__ = ["compositionality", "decompositionality", "retrieval", "landmark_correspondence",
           "landmark_embeddings", "symmetry", "linear_probe_classification", "segmentation", "dice"]

# Crops are embedded in chunks of this many so that the token maps `embed` also returns
# (chunk x h x w x C floats) stay small.
_CHUNK = 256
# Upper bound of the sample counts (n, trials, pairs, k): beyond it a probe would run for days.
_MAX_SAMPLES = 10**6
# Seeds also reach scikit-learn, whose random_state takes 32-bit seeds.
_MAX_SEED = 2**32 - 1


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


def _check_features(features):
    return require_choice("features", features, ("cls", "mean"))


def _check_seed(seed):
    return require_int("seed", seed, 0, _MAX_SEED)


def _global_features(enc, images, features):
    """f(x) of each image: its CLS token or its mean patch token, float64 (B, C)."""
    _check_features(features)
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
    """patch x patch windows of one image centred on `centres` (M, 2) x, y; zero-padded."""
    h, w = image.shape
    origins = np.rint(np.asarray(centres, np.float64) - (patch - 1) / 2).astype(int)
    # Clipping keeps every slice inside the padded image even for points off the image.
    xs = np.clip(origins[:, 0], -patch, w)
    ys = np.clip(origins[:, 1], -patch, h)
    padded = np.pad(image, patch)
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


# ---------------------------------------------------------------- global embedding probes
def _split(patches, parts):
    """Halves (left, right) or quadrants (row-major) of square patches (B, P, P)."""
    h = patches.shape[-1] // 2
    if parts == 2:
        return [patches[:, :, :h], patches[:, :, h:]]
    if parts == 4:
        return [patches[:, :h, :h], patches[:, :h, h:], patches[:, h:, :h], patches[:, h:, h:]]
    raise ACEError(f"parts must be 2 (halves) or 4 (quadrants), got {parts}")


def compositionality(enc, images, parts=4, n=200, patch=None, features="cls", seed=0):
    """Fig. 3: is the embedding of a patch the mean of the embeddings of its parts?

    Samples `n` random square patches of side `patch` (default a quarter of the shorter
    image side, see `_default_patch`), each from a random image, splits each into its
    left/right halves (`parts=2`) or quadrants (`parts=4`), and measures
    cos(f(patch), mean_k f(part_k)). Every crop, whole or part, is resized by the encoder
    to its input size; halves are therefore stretched to a square.

    Returns {"mean", "std", "cosines": (n,), "n"}.
    """
    x = _as_images(images)
    if require_int("parts", parts) not in (2, 4):
        raise ACEError(f"parts must be 2 (halves) or 4 (quadrants), got {parts}")
    n = require_int("n", n, 1, _MAX_SAMPLES)
    _check_features(features)
    patch = _check_patch(patch, x.shape[1:])
    if patch % 2:
        raise ACEError(f"patch must be even to split into halves or quadrants, got {patch}")
    rng = np.random.default_rng(_check_seed(seed))
    idx = rng.integers(0, len(x), n)
    patches = _cut(x[idx], _random_origins(rng, n, x.shape[1:], patch), patch)
    whole = _global_features(enc, patches, features)
    mean_parts = np.mean([_global_features(enc, p, features) for p in _split(patches, parts)], axis=0)
    cosines = 1.0 - paired_cosine_distances(whole, mean_parts)
    return {"mean": float(cosines.mean()), "std": float(cosines.std()), "cosines": cosines, "n": int(n)}


def decompositionality(enc, images, batch=32, patch=None, trials=320, features="cls", seed=0):
    """Fig. 4: does removing a patch from an image remove that patch's embedding?

    In each round `batch` distinct images X_j are drawn and a random square patch C_j
    (side `patch`, default as in `compositionality`) is chosen in each. C_j is excised by
    setting its pixels to the mean intensity of X_j (a neutral fill that adds no edges
    of its own beyond the patch outline), giving X_j'. With d_j = f(X_j) - f(X_j'), the
    decision for j is correct when argmax_k cos(d_j, f(C_k)) == j. Rounds are repeated
    until at least `trials` decisions are made.

    Returns {"accuracy", "trials", "chance": 1 / batch}.
    """
    x, full, patch, rounds = _patch_rounds(enc, images, batch, patch, trials, features, seed)
    correct = []
    for idx, origins, crops in rounds:
        excised = x[idx].copy()
        for im, (y, x0) in zip(excised, origins):
            im[y:y + patch, x0:x0 + patch] = im.mean()
        d = full[idx] - _global_features(enc, excised, features)
        sims = cosine_similarity(d, _global_features(enc, crops, features))
        correct.append(sims.argmax(axis=1) == np.arange(batch))
    return _accuracy(correct, batch)


def retrieval(enc, images, batch=32, patch=None, trials=320, features="cls", seed=0):
    """Fig. 5: does a patch's embedding find the image it was cut from?

    In each round `batch` distinct images X_j are drawn and a random square patch C_j
    (side `patch`, default as in `compositionality`) is cut from each; the decision for
    j is correct when argmax_i cos(f(C_j), f(X_i)) == j over the images of the round.
    Rounds are repeated until at least `trials` decisions are made.

    Returns {"accuracy", "trials", "chance": 1 / batch}.
    """
    _, full, _, rounds = _patch_rounds(enc, images, batch, patch, trials, features, seed)
    correct = []
    for idx, _, crops in rounds:
        sims = cosine_similarity(_global_features(enc, crops, features), full[idx])
        correct.append(sims.argmax(axis=1) == np.arange(batch))
    return _accuracy(correct, batch)


def _patch_rounds(enc, images, batch, patch, trials, features, seed):
    """Shared set-up of the round-based probes: the images, their embeddings, the patch
    side, and a generator of rounds (indices of `batch` distinct images, patch origins,
    the patches) until at least `trials` decisions."""
    x = _as_images(images)
    batch = _check_batch(batch, len(x))
    trials = require_int("trials", trials, 1, _MAX_SAMPLES)
    _check_features(features)
    patch = _check_patch(patch, x.shape[1:])
    rng = np.random.default_rng(_check_seed(seed))
    full = _global_features(enc, x, features)

    def rounds():
        for _ in range(math.ceil(trials / batch)):
            idx = rng.choice(len(x), batch, replace=False)
            origins = _random_origins(rng, batch, x.shape[1:], patch)
            yield idx, origins, _cut(x[idx], origins, patch)

    return x, full, patch, rounds()


def _accuracy(correct, batch):
    correct = np.concatenate(correct)
    return {"accuracy": float(correct.mean()), "trials": int(correct.size), "chance": 1.0 / batch}


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
                            upsample=4, features="cls", seed=0):
    """Fig. 7: zero-shot landmark correspondence between images.

    For an ordered pair (query q, key k) each landmark of q is located in k by nearest
    features, and the error is the distance from the prediction to k's true landmark,
    in pixels of the input images.

    method="dense": patch-token features, bilinearly sampled (see `_dense_predictions`;
        `upsample` sets the sub-token search grid). One forward pass per image.
    method="window": the global embedding (`features`) of a patch x patch window centred
        on the landmark against windows of k every `stride` pixels (see
        `_window_predictions`). One forward pass per window: slow on large images.

    landmarks: (N, L, 2) x, y on `images` (N, H, W); NaN marks a missing landmark, whose
    errors are NaN and left out of the means. Every image is the query against every
    other image, or `pairs` random ordered pairs are used.

    Returns {"mean_error", "median_error", "identity_error" (the mean error of predicting
    the query's own coordinates: a reference that uses no features), "per_landmark": (L,),
    "errors": (P, L), "pairs": P, "pair_indices": (P, 2) query, key, "predicted": (P, L, 2)
    x, y in the key}.
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    require_choice("method", method, ("dense", "window"))
    pair_idx = _pair_list(len(x), pairs, np.random.default_rng(_check_seed(seed)))
    if method == "dense":
        pred = _dense_predictions(enc, x, lm, pair_idx, require_int("upsample", upsample, 1, 64))
    else:
        patch = _check_window(patch, x.shape[1:])
        stride = require_int("stride", stride, 1, max(x.shape[1:]))
        pred = _window_predictions(enc, x, lm, pair_idx, patch, stride, _check_features(features))
    errors = np.linalg.norm(pred - lm[pair_idx[:, 1]], axis=-1)
    # Reference without features: predict the query's own coordinates in the key image.
    identity = np.linalg.norm(lm[pair_idx[:, 0]] - lm[pair_idx[:, 1]], axis=-1)
    return {"mean_error": float(_nanmean(errors)), "median_error": float(_nanmedian(errors)),
            "identity_error": float(_nanmean(identity)),
            "per_landmark": _nanmean(errors, axis=0), "errors": errors, "pairs": len(pair_idx),
            "pair_indices": pair_idx, "predicted": pred}


def _landmark_windows(images, landmarks, patch):
    """Windows around every present landmark, with their image index and landmark id."""
    present = ~np.isnan(landmarks).any(-1)
    image_index, ids = np.nonzero(present)
    windows = np.concatenate([_windows(images[i], landmarks[i, present[i]], patch)
                              for i in range(len(images)) if present[i].any()])
    return windows, image_index, ids


def landmark_embeddings(enc, images, landmarks, k=5, patch=64, features="cls", tsne=True, seed=0):
    """Fig. 6: are the embeddings of different anatomical landmarks distinct?

    Embeds the patch x patch window centred on every present landmark and measures how
    well the embedding identifies the landmark:

    * accuracy: k-nearest-neighbour (L2) landmark-identity accuracy, leave-one-image-out
      (each image's landmarks are classified by the other images' landmarks);
      `knn_accuracy` is the same number. chance is the most frequent id's share.
    * silhouette: scikit-learn silhouette score of the embeddings with ids as clusters.
    * tsne: (M, 2) t-SNE of the embeddings (perplexity min(30, (M - 1) / 3)), or None when
      `tsne=False`.

    Returns also `embeddings` (M, C), `ids` (M,) landmark index, `image_index` (M,).
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    k = require_int("k", k, 1, _MAX_SAMPLES)
    patch = _check_window(patch, x.shape[1:])
    _check_features(features)
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
    acc = float(accuracy_score(ids, pred))
    sil = float(silhouette_score(emb, ids)) if len(np.unique(ids)) < len(ids) else float("nan")
    coords = None
    if tsne:
        perplexity = min(30.0, (len(ids) - 1) / 3)
        # PCA initialization (the stable choice) needs at least two feature dimensions.
        init = "pca" if emb.shape[1] >= 2 else "random"
        coords = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(emb)
    return {"accuracy": acc, "knn_accuracy": acc, "trials": len(ids),
            "chance": float(np.bincount(ids).max() / len(ids)), "silhouette": sil, "k": k,
            "embeddings": emb.astype(np.float32), "ids": ids, "image_index": image_index, "tsne": coords}


def symmetry(enc, images, landmarks, pairs, patch=64, features="cls"):
    """Fig. 11: do mirrored structures embed alike?

    `pairs` lists (left, right) landmark indices of mirror structures. For each image and
    pair with both landmarks present, the patch x patch window around the left landmark is
    flipped horizontally and matched by L2 against the windows around all right-side
    landmarks (the second entries of `pairs`) present in the same image; the decision is
    correct when the nearest one is the partner. chance is the mean of 1 / candidates.

    Returns {"accuracy", "trials", "chance"}.
    """
    x = _as_images(images)
    lm = _as_landmarks(landmarks, x)
    pairs = _landmark_pairs(pairs, lm.shape[1])
    patch = _check_window(patch, x.shape[1:])
    _check_features(features)
    present = ~np.isnan(lm).any(-1)
    right = np.unique(pairs[:, 1])
    correct, chance = [], []
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
    if not correct:
        raise ACEError("no image has both landmarks of any pair")
    return {"accuracy": float(np.mean(correct)), "trials": len(correct), "chance": float(np.mean(chance))}


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
def linear_probe_classification(enc, train, test, features="cls", C=1.0):
    """Frozen-feature classification (e.g. JSRT nodule vs no nodule).

    train and test are (images, labels). A logistic regression (scikit-learn, features
    standardized on the training set, inverse regularization `C`) is fitted on the
    frozen f(x) of the training images. auc is the ROC AUC on the test set (one-vs-rest
    for more than two classes), accuracy the share of correct labels; chance is the most
    frequent test label's share.

    Returns {"auc", "accuracy", "trials", "chance", "n_train", "n_test"}.
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
    _check_features(features)
    f_train = _global_features(enc, x_train, features)
    f_test = _global_features(enc, x_test, features)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(f_train, y_train)
    proba = clf.predict_proba(f_test)
    if len(clf.classes_) == 2:
        auc = roc_auc_score(y_test, proba[:, 1])
    else:
        auc = roc_auc_score(y_test, proba, multi_class="ovr", labels=clf.classes_)
    _, counts = np.unique(y_test, return_counts=True)
    return {"auc": float(auc), "accuracy": float(accuracy_score(y_test, clf.predict(f_test))),
            "trials": len(y_test), "chance": float(counts.max() / len(y_test)),
            "n_train": len(y_train), "n_test": len(y_test)}


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

    Returns {"dice": {name: mean}, "dice_per_image": {name: (N_test,)}, "shots": n_train_used}.
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
    grid = (cfg["img_size"] // cfg["patch_size"],) * 2
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
    return {"dice": mean_dice, "dice_per_image": per_image, "shots": len(order)}


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
    head = {"w": np.zeros((model.config["embed_dim"], s)), "b": np.zeros(s)}
    adam = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in head.items()}
    rng = np.random.default_rng(seed)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            feats = model.forward_train(x[idx])
            tokens = feats[:, 1:].astype(np.float64)
            prob = 1 / (1 + np.exp(-(tokens @ head["w"] + head["b"])))
            d_logits = (prob - y[idx]) / prob.size
            d_feats = np.zeros_like(feats)
            d_feats[:, 1:] = d_logits @ head["w"].T
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

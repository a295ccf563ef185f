"""Probes of anatomical landmarks (Figs. 6, 7, 11): zero-shot correspondence between images with
its raw-pixel reference, landmark identity of window embeddings, symmetry of mirrored structures."""
import numpy as np
import scipy.fft
from scipy import ndimage
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.metrics.pairwise import pairwise_distances_argmin
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from .. import _native
from ..errors import ACEError
from ..validate import require_choice, require_int, require_real_array
from .common import (_MAX_SAMPLES, _as_images, _as_landmarks, _check_seed, _check_window, _global_features,
                     _nanmean, _nanmedian, _windows, bootstrap_ci, resolve_features)


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

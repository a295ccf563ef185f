"""Key-point detection (paper App. B.2, Fig. 12): the encoder fine-tuned end to end with a heat-map
head, decoded to pixel coordinates.

* Head: `ace.finetune.Heatmap`, a linear map of every token to the r x r block of heat-map pixels it
  covers in each key point's map, r = token stride / output_stride: heat maps at `output_stride`
  pixels of the encoder input (4 by default: 56 x 56 maps for a 224 px ViT with patch 16).
* Targets: a Gaussian of `sigma` heat-map pixels around each key point, normalized to sum to 1 over
  the map. Loss: the cross-entropy of each map's spatial softmax against its target
  (`ace.finetune.spatial_cross_entropy`); a missing key point (NaN) has no loss.
* Decoding: soft-argmax, the expected position under the spatial softmax (sub-pixel, and exactly
  the centre for a Gaussian log-heat-map away from the border), or the argmax pixel's centre.
* Coordinates follow the probes' convention: heat-map pixel (i, j) of an (h, w) map over an (H, W)
  image is centred at x = (j + 0.5) W / w - 0.5, y = (i + 0.5) H / h - 0.5.
"""
import numpy as np

from ..errors import ACEError
from ..finetune import Heatmap, finetune_end_to_end, predict, spatial_cross_entropy
from ..finetune import settings as finetune_settings
from ..validate import require_choice, require_float, require_int
from .common import _as_images, _as_landmarks, _check_seed, _nanmean, _nanmedian, _split_pair, bootstrap_ci

DECODERS = ("soft-argmax", "argmax")


def heatmap_shape(enc, output_stride):
    """(side of the heat maps, upsampling r of the token grid) for an output stride in pixels of
    the encoder input; the stride must divide the token stride (patch size of a ViT)."""
    side, grid = enc.config["img_size"], enc.token_grid
    token_stride = side // grid
    output_stride = require_int("output_stride", output_stride, 1, token_stride)
    if token_stride % output_stride:
        raise ACEError(f"output_stride must divide the token stride of {token_stride} pixels, got {output_stride}")
    upsample = token_stride // output_stride
    return grid * upsample, upsample


def _to_map(points, image_shape, map_shape):
    """x, y image coordinates -> heat-map coordinates (same pixel-centre convention)."""
    scale = np.array([map_shape[1] / image_shape[1], map_shape[0] / image_shape[0]])
    return (np.asarray(points, np.float64) + 0.5) * scale - 0.5


def _to_image(points, image_shape, map_shape):
    scale = np.array([image_shape[1] / map_shape[1], image_shape[0] / map_shape[0]])
    return (np.asarray(points, np.float64) + 0.5) * scale - 0.5


def gaussian_heatmaps(points, image_shape, map_shape, sigma):
    """Target distributions (..., h, w): a Gaussian of `sigma` heat-map pixels around each point
    (..., 2) x, y in pixels of images of `image_shape`, normalized to sum to 1 over the map; NaN
    for a missing point."""
    uv = _to_map(points, image_shape, map_shape)
    rows, cols = np.arange(map_shape[0]), np.arange(map_shape[1])
    log_g = -((cols - uv[..., 0:1])[..., None, :] ** 2 + (rows - uv[..., 1:2])[..., :, None] ** 2) / (2 * sigma ** 2)
    # Subtracting the maximum keeps points far outside the map from underflowing to 0 / 0.
    g = np.exp(log_g - log_g.max(axis=(-2, -1), keepdims=True))
    with np.errstate(invalid="ignore"):
        return g / g.sum(axis=(-2, -1), keepdims=True)


def decode_heatmaps(logits, image_shape, method="soft-argmax"):
    """Heat-map logits (..., h, w) -> x, y (..., 2) in pixels of images of `image_shape`: the
    expected position under the spatial softmax ("soft-argmax") or the best pixel's centre
    ("argmax")."""
    require_choice("method", method, DECODERS)
    logits = np.asarray(logits, np.float64)
    h, w = logits.shape[-2:]
    flat = logits.reshape(logits.shape[:-2] + (h * w,))
    if method == "argmax":
        best = flat.argmax(axis=-1)
        uv = np.stack([best % w, best // w], axis=-1).astype(np.float64)
    else:
        p = np.exp(flat - flat.max(axis=-1, keepdims=True))
        p = (p / p.sum(axis=-1, keepdims=True)).reshape(logits.shape)
        uv = np.stack([(p.sum(axis=-2) * np.arange(w)).sum(-1), (p.sum(axis=-1) * np.arange(h)).sum(-1)], axis=-1)
    return _to_image(uv, image_shape, (h, w))


def keypoints(enc, train, test, points=None, shots=None, *, output_stride=4, sigma=1.0, decode="soft-argmax",
              finetune=None, seed=0):
    """Fig. 12: key-point detection, the encoder fine-tuned end to end with a heat-map head.

    train and test are (images, landmarks): images (N, H, W), landmarks (N, L, 2) x, y pixels with
    NaN for a missing one. `points` picks the key points (landmark indices; default all L). A copy
    of `enc` and a `Heatmap` head are trained through the core's backward pass on the training
    images (`ace.finetune`; `finetune` overrides epochs, batch, lr, head_lr, weight_decay); the
    original encoder is left unchanged. `shots` keeps the first `shots` training images after a
    shuffle seeded by `seed` (few-shot); None uses them all. Images without any of the key points
    are left out of both parts.

    Returns {"mean_error" (pixels of the images given, over test images and key points), "ci95"
    (resampling test images), "median_error", "per_point": (K,) with "per_point_ci95", "errors":
    (N_test, K), "predicted": (N_test, K, 2) x, y; the reference that learns no image, predicting
    every key point at its mean training position: "mean_position_error", "mean_position_ci95",
    "mean_position_per_point"; "points", "shots", "n_test", "output_stride", "sigma", "decode"}.
    """
    x_train, lm_train = _split_pair("train", train, "images, landmarks")
    x_test, lm_test = _split_pair("test", test, "images, landmarks")
    x_train, x_test = _as_images(x_train, "train images"), _as_images(x_test, "test images")
    lm_train, lm_test = _as_landmarks(lm_train, x_train), _as_landmarks(lm_test, x_test)
    if lm_train.shape[1] != lm_test.shape[1]:
        raise ACEError(f"train and test must have the same landmarks, got {lm_train.shape[1]} and {lm_test.shape[1]}")
    points = _check_points(points, lm_train.shape[1])
    lm_train, lm_test = lm_train[:, points], lm_test[:, points]
    sigma = require_float("sigma", sigma, positive=True)
    require_choice("decode", decode, DECODERS)
    settings = finetune_settings(finetune)
    side, upsample = heatmap_shape(enc, output_stride)
    keep = ~np.isnan(lm_train).any(-1).all(-1)
    x_train, lm_train = x_train[keep], lm_train[keep]
    keep = ~np.isnan(lm_test).any(-1).all(-1)
    x_test, lm_test = x_test[keep], lm_test[keep]
    if len(x_train) == 0 or len(x_test) == 0:
        raise ACEError("keypoints needs train and test images with at least one of the key points")
    order = np.random.default_rng(_check_seed(seed)).permutation(len(x_train))
    if shots is not None:
        order = order[:require_int("shots", shots, 1, len(x_train))]
    targets = gaussian_heatmaps(lm_train[order], x_train.shape[1:], (side, side), sigma)
    head = Heatmap(enc.width, len(points), upsample)
    model = finetune_end_to_end(enc, x_train[order], targets, head, spatial_cross_entropy, seed=seed, **settings)
    predicted = decode_heatmaps(predict(model, head, x_test), x_test.shape[1:], decode)
    errors = np.linalg.norm(predicted - lm_test, axis=-1)
    mean_position = _nanmean(lm_train[order], axis=0)
    reference = np.linalg.norm(mean_position - lm_test, axis=-1)
    return {"mean_error": float(_nanmean(errors)), "ci95": bootstrap_ci(errors),
            "median_error": float(_nanmedian(errors)),
            "per_point": _nanmean(errors, axis=0), "per_point_ci95": [bootstrap_ci(e) for e in errors.T],
            "errors": errors, "predicted": predicted,
            "mean_position_error": float(_nanmean(reference)), "mean_position_ci95": bootstrap_ci(reference),
            "mean_position_per_point": _nanmean(reference, axis=0),
            "points": points.tolist(), "shots": len(order), "n_test": len(x_test),
            "output_stride": enc.config["img_size"] // side, "sigma": sigma, "decode": decode}


def _check_points(points, n_landmarks):
    """Landmark indices (K,) of the key points: all for None, else distinct indices in range."""
    if points is None:
        return np.arange(n_landmarks)
    a = np.asarray(points)
    if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
        raise ACEError(f"points must be a non-empty list of landmark indices, got {points!r}")
    if a.min() < 0 or a.max() >= n_landmarks or len(np.unique(a)) != len(a):
        raise ACEError(f"points must be distinct landmark indices in [0, {n_landmarks - 1}], got {a.tolist()}")
    return a.astype(int)

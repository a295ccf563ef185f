"""Weakly supervised localization (paper App. B.3, Fig. 13): Grad-CAM on a fine-tuned classifier.

A copy of the encoder and a linear classifier on its mean token (`ace.finetune.PooledLinear`)
are fine-tuned end to end on image-level labels only. For an image and a class c, with A the
final tokens (h, w, C) and s_c the class's score (its log-odds, see `grad_cam`):

    alpha_k = mean_ij d s_c / d A_ijk              (channel weights: the mean gradient)
    map_ij  = ReLU(sum_k alpha_k A_ijk)            (the class's evidence per token)

upsampled bilinearly from the token grid to the image (token centres aligned, as the
segmentation probe upsamples) and scaled to a maximum of 1. The gradient comes from the head's
explicit backward, so any head with `forward` / `backward` works; for the pooled linear head it is
W[:, c] / (h w) at every token (Grad-CAM then equals CAM).

Metrics against annotations of where the lesion is, on the positive test images:

* pointing game: a hit when the map's peak lies within `tolerance` pixels of the box (a point
  is a box of no size); chance is the share of the image within that reach, the hit rate of a
  peak drawn uniformly at random;
* IoU of the thresholded map (>= `threshold` of its maximum) with the box.
"""
import numpy as np
from scipy import ndimage

from ..errors import ACEError
from ..finetune import PooledLinear, finetune_end_to_end, predict, softmax_cross_entropy, token_map
from ..finetune import settings as finetune_settings
from ..validate import require_float, require_int, require_real_array
from .common import _as_images, _check_seed, _split_pair, bootstrap_ci
from .transfer import _auc


def grad_cam(tokens, head, target):
    """Grad-CAM maps (B, h, w) on the token grid: tokens (B, h, w, C), a head with `forward`
    (tokens -> class scores (B, S)) and `backward` (d scores -> d tokens), and the class of each
    image (an int or (B,) ints). The score of class c is its log-odds, y_c - log sum_{k != c}
    exp(y_k) (y_1 - y_0 for two classes): what separates c from the others, without the part of
    y_c that every class shares."""
    scores = head.forward(tokens)
    rows = np.arange(len(scores))
    target = np.broadcast_to(np.asarray(target), (len(scores),))
    others = scores.copy()
    others[rows, target] = -np.inf
    d_scores = -np.exp(others - others.max(axis=1, keepdims=True))
    d_scores /= -d_scores.sum(axis=1, keepdims=True)
    d_scores[rows, target] = 1.0
    weights = head.backward(d_scores).mean(axis=(1, 2))
    return np.maximum(np.einsum("bijc,bc->bij", tokens, weights), 0.0)


def upsample(maps, shape):
    """Token-grid maps (B, h, w) -> (B, H, W), bilinear with token centres aligned (edges held),
    each scaled to a maximum of 1 (an all-zero map stays 0)."""
    zoom = (shape[0] / maps.shape[1], shape[1] / maps.shape[2])
    out = np.stack([ndimage.zoom(m, zoom, order=1, grid_mode=True, mode="nearest") for m in maps])
    peak = out.max(axis=(1, 2), keepdims=True)
    return np.divide(out, peak, out=np.zeros_like(out), where=peak > 0)


def train_classifier(enc, images, labels, *, seed=0, **settings):
    """A copy of `enc` and a `PooledLinear` head fine-tuned end to end on integer labels (softmax
    cross-entropy); returns (model, head)."""
    head = PooledLinear(enc.width, int(labels.max()) + 1)
    model = finetune_end_to_end(enc, images, labels, head, softmax_cross_entropy, seed=seed, **settings)
    return model, head


def heatmaps(model, head, images, target=1, batch=64):
    """Grad-CAM heat maps of class `target` over `images` (N, H, W) -> (N, H, W) in [0, 1]."""
    out = []
    for start in range(0, len(images), batch):
        tokens = token_map(model, model.forward_features(model.preprocess(images[start:start + batch])))
        out.append(upsample(grad_cam(tokens, head, target), images.shape[1:3]))
    return np.concatenate(out)


def boxes_from_points(points, radii):
    """(N, 4) x0, y0, x1, y1 boxes around circles (centre (N, 2) x, y; radius (N,)) in pixels."""
    points, radii = np.asarray(points, np.float64), np.asarray(radii, np.float64)[:, None]
    return np.concatenate([points - radii, points + radii], axis=1)


def _distance_to_boxes(x, y, boxes):
    """Distance of pixel centres (x, y) to each box (N, 4); 0 inside."""
    dx = np.maximum(np.maximum(boxes[:, 0, None, None] - x, x - boxes[:, 2, None, None]), 0)
    dy = np.maximum(np.maximum(boxes[:, 1, None, None] - y, y - boxes[:, 3, None, None]), 0)
    return np.hypot(dx, dy)


def pointing_game(maps, boxes, tolerance=0.0):
    """Per image: whether the peak of maps (N, H, W) lies within `tolerance` pixels of its box
    (N, 4) x0, y0, x1, y1 (x0 = x1, y0 = y1 for a point), and the chance of that for a peak drawn
    uniformly over the image. Returns (hits (N,) bool, chance (N,))."""
    n, h, w = maps.shape
    peak = maps.reshape(n, -1).argmax(axis=1)
    py, px = peak // w, peak % w
    near = _distance_to_boxes(np.arange(w)[None, :], np.arange(h)[:, None], boxes) <= tolerance
    return near[np.arange(n), py, px], near.mean(axis=(1, 2))


def box_iou(maps, boxes, threshold=0.5):
    """IoU (N,) of each map's region >= threshold x its maximum with its box (the pixels whose
    centres lie in it)."""
    h, w = maps.shape[1:]
    inside = _distance_to_boxes(np.arange(w)[None, :], np.arange(h)[:, None], boxes) == 0
    region = maps >= threshold * maps.max(axis=(1, 2), keepdims=True)
    region &= maps > 0
    union = (region | inside).sum(axis=(1, 2))
    return np.where(union > 0, (region & inside).sum(axis=(1, 2)) / np.maximum(union, 1), 0.0)


def localization(enc, train, test, boxes=None, *, target=1, tolerance=None, threshold=0.5, finetune=None, seed=0):
    """Fig. 13: where does a classifier trained on image labels look? Grad-CAM against boxes.

    train and test are (images, labels): images (N, H, W), integer labels (N,) from 0. A copy of
    `enc` with a linear head on its mean token is fine-tuned on the training labels
    (`train_classifier`; `finetune` overrides epochs, batch, lr, head_lr, weight_decay). `boxes`
    (N_test, 4) x0, y0, x1, y1 pixels on the test images, NaN rows where there is nothing to find
    (a point is a box with x0 = x1, y0 = y1), or None: maps of the test images of class `target`
    without scores (pointing_game and iou None). Grad-CAM maps of class `target` on the test images
    with a box are scored by the pointing game (`tolerance` pixels; default 0 for boxes, 1/16 of
    the image side for points) and by IoU of the map thresholded at `threshold` of its maximum.

    Returns {"pointing_game", "ci95", "chance" (mean share of the image within reach of the box),
    "hits", "iou", "iou_ci95", "ious", "auc", "accuracy" (of the classifier on all test images,
    `target` vs the rest), "maps" (N_boxed, H, W), "boxed" (indices of the test images scored),
    "tolerance", "threshold", "n_train", "n_test"}; the scores are None without boxes.
    """
    x_train, y_train = _split_pair("train", train, "images, labels")
    x_test, y_test = _split_pair("test", test, "images, labels")
    x_train, x_test = _as_images(x_train, "train images"), _as_images(x_test, "test images")
    y_train, y_test = _labels(y_train, len(x_train), "train"), _labels(y_test, len(x_test), "test")
    target = require_int("target", target, 0, int(y_train.max()))
    if boxes is None:
        # Nothing to score against: the maps of the test images of the target class.
        boxes = np.full((len(x_test), 4), np.nan)
        boxed = np.flatnonzero(y_test == target)
    else:
        boxes = require_real_array("boxes", boxes).astype(np.float64)
        if boxes.shape != (len(x_test), 4):
            raise ACEError(f"boxes must be (N_test, 4) x0, y0, x1, y1 with N_test = {len(x_test)}, got {boxes.shape}")
        boxed = np.flatnonzero(np.isfinite(boxes).all(axis=1))
        if len(boxed) == 0:
            raise ACEError("no test image has a box: nothing to localize (pass boxes=None for the maps alone)")
        if np.any(boxes[boxed, 2] < boxes[boxed, 0]) or np.any(boxes[boxed, 3] < boxes[boxed, 1]):
            raise ACEError("boxes must have x0 <= x1 and y0 <= y1")
    if tolerance is None:
        points = len(boxed) and np.all(boxes[boxed, 2:] == boxes[boxed, :2])
        tolerance = max(x_test.shape[1:]) / 16 if points else 0.0
    tolerance = require_float("tolerance", tolerance, 0.0)
    threshold = require_float("threshold", threshold, 0.0, 1.0)
    model, head = train_classifier(enc, x_train, y_train, seed=_check_seed(seed), **finetune_settings(finetune))
    logits = predict(model, head, x_test)
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    positive = (y_test == target).astype(int)
    maps = heatmaps(model, head, x_test[boxed], target)
    result = {"auc": _auc(np.column_stack([positive, 1 - proba[:, target], proba[:, target]])),
              "accuracy": float(((logits.argmax(axis=1) == target) == positive.astype(bool)).mean()),
              "maps": maps, "boxed": boxed, "tolerance": tolerance, "threshold": threshold,
              "n_train": len(x_train), "n_test": len(x_test),
              "pointing_game": None, "ci95": None, "chance": None, "hits": None, "iou": None, "iou_ci95": None,
              "ious": None}
    if len(boxed) and np.isfinite(boxes[boxed]).all():
        hits, chance = pointing_game(maps, boxes[boxed], tolerance)
        ious = box_iou(maps, boxes[boxed], threshold)
        result.update(pointing_game=float(hits.mean()), ci95=bootstrap_ci(hits), chance=float(chance.mean()),
                      hits=hits, iou=float(ious.mean()), iou_ci95=bootstrap_ci(ious), ious=ious)
    return result


def _labels(labels, n, name):
    y = np.asarray(labels)
    if y.shape != (n,) or y.dtype.kind not in "iub":
        raise ACEError(f"{name} labels must be integers, one per image ({n},), got {y.dtype} {y.shape}")
    y = y.astype(int)
    if y.min() < 0 or len(np.unique(y)) < 2:
        raise ACEError(f"{name} labels must be class indices from 0 with at least 2 classes, got {np.unique(y)}")
    return y

"""Correspondence between the two images of a pair (Fig. 10, FIRE)."""
import numpy as np
from sklearn.metrics.pairwise import pairwise_distances_argmin

from ..errors import ACEError
from ..preprocess import to_unit_float
from ..validate import require_int, require_real_array
from .common import _global_features, _windows, bootstrap_ci, resolve_features


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

"""Transfer probes (Table 1, Fig. 8): classification from the frozen global embedding, and
segmentation with a linear head on the patch tokens, frozen or fine-tuned end to end."""
import math

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import ACEError
from ..finetune import TokenLinear, finetune_end_to_end, predict, sigmoid_cross_entropy
from ..finetune import settings as finetune_settings
from ..validate import require_choice, require_float, require_int
from .common import _as_images, _check_seed, _global_features, _split_pair, bootstrap_ci, resolve_features


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
    the core's backward pass, see `ace.finetune`; the original encoder is left unchanged.
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
    settings = finetune_settings(finetune)
    order = np.random.default_rng(_check_seed(seed)).permutation(len(x_train))
    if shots is not None:
        order = order[:require_int("shots", shots, 1, len(x_train))]
    cfg = enc.config
    # The token grid: img_size / patch for a ViT, the final stage's grid for a Swin.
    grid = (getattr(enc, "token_grid", None) or cfg["img_size"] // cfg["patch_size"],) * 2
    if mode == "finetune":
        fractions = np.stack([_area_fraction(m[order], grid) for m in m_train.values()], axis=-1)
        probs = _finetune(enc, x_train[order], fractions, x_test, seed=seed, **settings)
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


def _finetune(enc, images, fractions, test_images, *, seed=0, **settings):
    """Train a copy of `enc` and a per-token linear head end to end (`ace.finetune`); return the
    test probabilities (N_test, gh, gw, S). Loss: mean binary cross-entropy of sigmoid(tokens W + b)
    against the covered area fractions."""
    head = TokenLinear(enc.width, fractions.shape[-1])
    model = finetune_end_to_end(enc, images, fractions, head, sigmoid_cross_entropy, seed=seed, **settings)
    return 1 / (1 + np.exp(-predict(model, head, test_images)))

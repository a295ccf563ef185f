"""The evaluation suite behind `ace evaluate`: every probe of DESIGN.md section 6 on one
encoder and one labelled data set, written as metrics.json, figures and report.md.

Every probe of a global embedding runs on both representations, the mean of the patch
tokens ("mean") and the CLS token ("cls"): metrics.json holds NAME_mean and NAME_cls, and
NAME is the encoder's own default (`default_features`: "mean" for ACE, "cls" for
DINO-style), with the choice under "features". Every headline carries "ci95", a 95%
bootstrap interval resampling images (see `probes.bootstrap_ci`).

Landmark correspondence runs on two sets of image pairs, each with the two references that
learn nothing (the query's own coordinates, and raw-pixel normalized cross-correlation of a
template) measured on the same pairs:

* landmarks_*: random ordered pairs of all annotated images, for the dense token probe;
* landmarks_window*: all ordered pairs of a few annotated images, for the sliding-window
  probes, whose cost grows with the images rather than the pairs (each key image's windows
  are embedded once for all its queries): the 64 px window of the probes and the paper's
  224 px window (both scaled from 512 px images), and the dense probe for comparison.
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import plots, probes
from .data.datasets import KEYPOINTS, LANDMARK_ORDER, keypoint_ids, landmark_ids, landmark_structures, mirror_pairs

SHOTS = (2, 5, 10)
FEATURES = ("mean", "cls")
# Probes run once per representation; their key without suffix is the encoder's default.
PER_FEATURES = ("compositionality", "decompositionality", "retrieval", "landmark_embeddings", "symmetry",
                "symmetry_paper", "landmarks_window", "landmarks_window_paper", "classification")
# The paper's figures for ACE (ViT-B on 1024 px images) beside ours, keyed by the start of a
# headline label: 61 px at 1024 is about 30 px on our 512 px images.
PAPER = {"decomposition acc": 0.890, "retrieval acc": 0.944, "landmark error px, paper window": 30.5}
STRUCTURE_NAMES = ("right lung", "left lung", "heart")


def budget(quick):
    """Trial counts, and the sliding-window stride in pixels of 512 px images. The full
    budget keeps a vit_nano evaluation of JSRT within about five minutes on two busy cores;
    --quick within about a minute and a half."""
    if quick:
        return dict(images=64, comp_n=48, trials=64, dense_pairs=30, window_images=4, window_stride=32,
                    embed_images=8, symmetry_images=12, finetune_epochs=5)
    return dict(images=None, comp_n=200, trials=320, dense_pairs=200, window_images=12, window_stride=16,
                embed_images=30, symmetry_images=60, finetune_epochs=20)


def window_sizes(size, quick):
    """Window sides and stride on images of side `size`, scaled from their 512 px values:
    the 64 px windows (and template) of the probes, the paper's 224 px landmark window
    (448 px on 1024 px images), and the sliding-window stride."""
    scale = size / 512
    return dict(patch=max(16, round(64 * scale)), paper=max(16, round(224 * scale)),
                stride=max(1, round(budget(quick)["window_stride"] * scale)))


class _PooledFeatures:
    """The encoder as the global probes see it, embedding each distinct batch once.

    A global probe run for "mean" and then for "cls" with the same seed embeds the very
    same crops twice; this view keeps the CLS token and the mean patch token of every batch
    (keyed by its bytes), so the second run costs no forward pass. Its token maps are that
    mean, (B, 1, 1, C): all a global probe reads. Probes of the token maps (dense
    correspondence, segmentation) get the encoder itself."""

    def __init__(self, enc):
        self.enc = enc
        self.config = enc.config
        self.default_features = getattr(enc, "default_features", "cls")
        self._seen = {}

    def embed(self, images, batch_size=64):
        images = np.ascontiguousarray(images)
        key = (images.shape, images.dtype.str, hashlib.blake2b(images.data, digest_size=16).digest())
        if key not in self._seen:
            cls, tokens = self.enc.embed(images, batch_size=batch_size)
            self._seen[key] = (cls, tokens.mean(axis=(1, 2), keepdims=True))
        return self._seen[key]


def run_suite(enc, data, out, *, quick=False, progress=True):
    """All probes; returns the metrics dict and the figures, written into `out` with
    arrays.npz (per-trial compositionality cosines and landmark errors of every method)."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    b = budget(quick)
    size = data.images.shape[-1]
    w = window_sizes(size, quick)
    default = probes.resolve_features(enc, "default")
    pooled = _PooledFeatures(enc)
    unlabelled = data.images[: b["images"]]
    annotated = np.nonzero(~np.isnan(data.landmarks).all(axis=(1, 2)))[0]
    lm_images, lm = data.images[annotated], data.landmarks[annotated]
    # The sliding-window probes' images: a seeded choice among the annotated ones.
    chosen = np.sort(np.random.default_rng(0).choice(len(annotated), min(b["window_images"], len(annotated)),
                                                     replace=False))
    win_images, win_lm = lm_images[chosen], lm[chosen]
    sym_images, sym_lm = lm_images[: b["symmetry_images"]], lm[: b["symmetry_images"]]
    sym_pairs = mirror_pairs(lm, size)
    embed_images, embed_lm = lm_images[: b["embed_images"]], lm[: b["embed_images"]]
    train_x, train_y, train_m = data.subset("train")
    test_x, test_y, test_m = data.subset("test")
    train_lm, test_lm = data.landmarks[data.split["train"]], data.landmarks[data.split["test"]]

    def per_features(name, probe):
        """The probe on each representation, one after the other: the second run finds its
        batches embedded (see `_PooledFeatures`)."""
        return [(f"{name}_{f}", lambda f=f: probe(f)) for f in FEATURES]

    tasks = [
        *per_features("compositionality", lambda f: probes.compositionality(
            pooled, unlabelled, parts=4, n=b["comp_n"], features=f)),
        *per_features("decompositionality", lambda f: probes.decompositionality(
            pooled, unlabelled, trials=b["trials"], features=f)),
        *per_features("retrieval", lambda f: probes.retrieval(pooled, unlabelled, trials=b["trials"], features=f)),
        # t-SNE, for the figures, of the default representation only.
        *per_features("landmark_embeddings", lambda f: probes.landmark_embeddings(
            pooled, embed_images, embed_lm, patch=w["patch"], features=f, tsne=f == default)),
        *per_features("symmetry", lambda f: probes.symmetry(
            pooled, sym_images, sym_lm, sym_pairs, patch=w["patch"], features=f)),
        *per_features("symmetry_paper", lambda f: probes.symmetry(
            pooled, sym_images, sym_lm, sym_pairs, patch=w["paper"], features=f)),
        *per_features("classification", lambda f: probes.linear_probe_classification(
            pooled, (train_x, train_y), (test_x, test_y), features=f)),
        # Same seed and pair count: the dense probe and the template compare on the same pairs.
        ("landmarks_dense", lambda: probes.landmark_correspondence(enc, lm_images, lm, method="dense",
                                                                   pairs=b["dense_pairs"])),
        ("landmarks_template", lambda: probes.template_matching_baseline(lm_images, lm, patch=w["patch"],
                                                                         pairs=b["dense_pairs"])),
        ("landmarks_window_dense", lambda: probes.landmark_correspondence(enc, win_images, win_lm, method="dense")),
        ("landmarks_window_template", lambda: probes.template_matching_baseline(win_images, win_lm,
                                                                                patch=w["patch"])),
        *per_features("landmarks_window", lambda f: probes.landmark_correspondence(
            pooled, win_images, win_lm, method="window", patch=w["patch"], stride=w["stride"], features=f)),
        *per_features("landmarks_window_paper", lambda f: probes.landmark_correspondence(
            pooled, win_images, win_lm, method="window", patch=w["paper"], stride=w["stride"], features=f)),
        ("segmentation", lambda: probes.segmentation(enc, (train_x, train_m), (test_x, test_m))),
        ("segmentation_finetune", lambda: probes.segmentation(
            enc, (train_x, train_m), (test_x, test_m), mode="finetune", finetune=dict(epochs=b["finetune_epochs"]))),
    ]
    # Key points: the encoder fine-tuned with a heat-map head (App. B.2), on the training images
    # with landmarks; few-shot runs take four times the epochs, as for segmentation.
    tasks.append(("keypoints", lambda: probes.keypoints(enc, (train_x, train_lm), (test_x, test_lm),
                                                        points=keypoint_ids(),
                                                        finetune=dict(epochs=b["finetune_epochs"]))))
    for k in SHOTS:
        tasks.append((f"keypoints_{k}shot", lambda k=k: probes.keypoints(
            enc, (train_x, train_lm), (test_x, test_lm), points=keypoint_ids(), shots=k,
            finetune=dict(epochs=b["finetune_epochs"] * 4))))
    for k in SHOTS:
        tasks.append((f"segmentation_{k}shot", lambda k=k: probes.segmentation(
            enc, (train_x, train_m), (test_x, test_m), shots=k)))
        tasks.append((f"segmentation_finetune_{k}shot", lambda k=k: probes.segmentation(
            enc, (train_x, train_m), (test_x, test_m), mode="finetune", shots=k,
            finetune=dict(epochs=b["finetune_epochs"] * 4))))

    results, seconds = {}, {}
    # t-SNE and the logistic regressions run single-threaded: on two cores their thread pools
    # only fight the encoder's.
    with threadpool_limits(1):
        for name, task in tqdm(tasks, desc="evaluate", unit="probe", disable=not progress):
            start = time.perf_counter()
            results[name] = task()
            seconds[name] = round(time.perf_counter() - start, 1)
    for name in PER_FEATURES:
        results[name] = results[f"{name}_{default}"]

    metrics = {name: {k: _plain(v) for k, v in r.items() if _is_reported(k, v)} for name, r in results.items()}
    for name, r in results.items():
        if name.startswith("landmarks"):
            metrics[name]["per_structure"] = per_structure(r["per_landmark"])
            metrics[name]["identity_per_structure"] = per_structure(r["identity_per_landmark"])
        if name.startswith("segmentation"):
            metrics[name]["summary"] = dice_summary(r["dice_per_image"])
        if name.startswith("keypoints"):
            metrics[name]["point_names"] = list(KEYPOINTS)
    metrics["default_features"] = default
    metrics["landmark_sets"] = {
        "random_pairs": {"images": len(annotated), "pairs": metrics["landmarks_dense"]["pairs"]},
        "window_pairs": {"images": [data.names[i] for i in annotated[chosen]],
                         "pairs": metrics["landmarks_window_dense"]["pairs"]}}
    metrics["seconds"] = seconds
    _save_arrays(out / "arrays.npz", results)
    return metrics, _figures(results, out, lm_images, lm, default)


def _save_arrays(path, results):
    """Per-trial arrays for comparisons across encoders (see notebooks/compare_pretraining.py):
    compositionality cosines; the (pairs, landmarks) errors of every landmark method, with the
    (query, key) images of each pair, and of the same-coordinates reference on each pair set;
    the decisions of the accuracy probes with the image of each; the (test images, points)
    key-point errors. The probes draw their trials from seeds, not from the encoder, so two
    encoders' arrays line up trial by trial (a paired comparison)."""
    arrays = {"compositionality": results["compositionality"]["cosines"]}
    for name, r in results.items():
        if name.startswith("landmarks"):
            arrays[f"errors_{name}"] = r["errors"]
            arrays[f"pairs_{name}"] = r["pair_indices"]
        elif name.startswith("keypoints"):
            arrays[f"errors_{name}"] = r["errors"]
        elif "correct" in r:
            arrays[f"correct_{name}"] = r["correct"]
            arrays[f"groups_{name}"] = r["image_index"]
    arrays["errors_identity"] = results["landmarks_dense"]["identity_errors"]
    arrays["errors_window_identity"] = results["landmarks_window_dense"]["identity_errors"]
    np.savez(path, **arrays)


def _figures(results, out, lm_images, lm, default):
    """The report's figures: {name: file name}."""
    figures = {}
    figures["compositionality"] = plots.compositionality_kde(
        {f"{f} features": results[f"compositionality_{f}"]["cosines"] for f in FEATURES},
        out / "compositionality_kde.png")
    emb = results["landmark_embeddings"]
    label = representation(default)
    figures["tsne_structures"] = plots.tsne_plot(emb["tsne"], landmark_structures(emb["ids"]),
                                                 out / "tsne_structures.png", names=STRUCTURE_NAMES,
                                                 title=f"t-SNE of landmark embeddings ({label}) by structure")
    figures["tsne"] = plots.tsne_plot(emb["tsne"], emb["ids"], out / "tsne.png",
                                      title=f"t-SNE of landmark embeddings ({label}) by landmark")
    dense = results["landmarks_dense"]
    q, k = (int(i) for i in dense["pair_indices"][0])
    figures["landmarks"] = plots.landmark_predictions(lm_images[q], lm_images[k], lm[k], dense["predicted"][0],
                                                      out / "landmark_predictions.png", true_q=lm[q])
    figures["errors"] = plots.error_boxplot(
        {"same coordinates": dense["identity_errors"], "NCC template": results["landmarks_template"]["errors"],
         "dense tokens": dense["errors"]}, out / "landmark_errors.png", by="landmark")
    window = {"same coordinates": results["landmarks_window_dense"]["identity_errors"],
              "NCC template": results["landmarks_window_template"]["errors"],
              "dense tokens": results["landmarks_window_dense"]["errors"]}
    for key, label in (("landmarks_window_paper", "paper window"), ("landmarks_window", "64 px window")):
        for f in FEATURES:
            window[f"{label}, {representation(f)}"] = results[f"{key}_{f}"]["errors"]
    figures["window_errors"] = plots.error_boxplot(window, out / "landmark_window_errors.png", by="method")
    return {name: Path(p).name for name, p in figures.items()}


def per_structure(per_landmark):
    """Mean landmark error per structure (right lung, left lung, heart); None if absent."""
    values = np.asarray([np.nan if v is None else v for v in per_landmark], float)
    out = {}
    for name in LANDMARK_ORDER:
        part = values[landmark_ids(name)]
        out[name] = float(np.nanmean(part)) if np.isfinite(part).any() else None
    return out


# Structures whose Dice is averaged per image (None: all of them).
DICE_GROUPS = {"heart": ["heart"], "lungs": ["left_lung", "right_lung"],
               "clavicles": ["left_clavicle", "right_clavicle"], "mean": None}


def dice_per_image(per_image, group):
    """(test images,) Dice of a DICE_GROUPS group, its structures averaged per image; None when
    `per_image` ({structure: Dice per image}, None for a missing value) lacks one of them."""
    structures = DICE_GROUPS[group] or list(per_image)
    if not all(s in per_image for s in structures):
        return None
    return np.mean([np.array([np.nan if v is None else v for v in per_image[s]], float) for s in structures], axis=0)


def dice_summary(per_image):
    """Dice of the heart, the lungs, the clavicles (left and right averaged per image) and
    of all structures, each {"value", "ci95"} with the interval resampling test images."""
    out = {}
    for name in DICE_GROUPS:
        values = dice_per_image(per_image, name)
        if values is not None:
            out[name] = {"value": float(values.mean()), "ci95": probes.bootstrap_ci(values)}
    return out


def _is_reported(key, value):
    """Numbers and small dicts go into metrics.json; per-trial arrays do not."""
    return not isinstance(value, np.ndarray) or key in ("per_landmark", "identity_per_landmark", "per_point",
                                                        "mean_position_per_point")


def _plain(value):
    """JSON-ready: arrays and lists as lists, NumPy scalars as Python numbers, NaN as None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_plain(v) for v in np.asarray(value).ravel().tolist()]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def representation(features):
    """How reports name a representation: "mean token", "CLS", "patch tokens", "raw pixels"."""
    return {"mean": "mean token", "cls": "CLS", "tokens": "patch tokens", "pixels": "raw pixels"}[features]


def headline(metrics):
    """The numbers of comparison tables: {label: {"value", "ci95", "text": "value [lo, hi]"}}. Labels name the
    representation: global probes once per representation (mean token, CLS), landmark
    errors per method and pair set with the two no-model references on the same pairs."""
    rows = {}

    def add(label, key, value="accuracy", ci="ci95"):
        r = metrics.get(key, {})
        if value in r:   # evaluations made before a measurement existed lack it
            rows[label] = {"value": r[value], "ci95": r.get(ci)}

    for f in FEATURES:
        add(f"compositionality cos, {representation(f)}", f"compositionality_{f}", "mean")
    for f in FEATURES:
        add(f"compositionality gap (own parts - others' parts), {representation(f)}", f"compositionality_{f}",
            "gap", "gap_ci95")
    for f in FEATURES:
        add(f"decomposition acc, {representation(f)}", f"decompositionality_{f}")
    for f in FEATURES:
        add(f"retrieval acc, {representation(f)}", f"retrieval_{f}")
    add("landmark error px, dense tokens", "landmarks_dense", "mean_error")
    add("landmark error px, NCC template (no model)", "landmarks_template", "mean_error")
    add("landmark error px, same coordinates (no model)", "landmarks_dense", "identity_error", "identity_ci95")
    for f in FEATURES:
        add(f"landmark error px, paper window, {representation(f)} [window pairs]",
            f"landmarks_window_paper_{f}", "mean_error")
    for f in FEATURES:
        add(f"landmark error px, 64 px window, {representation(f)} [window pairs]", f"landmarks_window_{f}",
            "mean_error")
    add("landmark error px, dense tokens [window pairs]", "landmarks_window_dense", "mean_error")
    add("landmark error px, NCC template (no model) [window pairs]", "landmarks_window_template", "mean_error")
    add("landmark error px, same coordinates (no model) [window pairs]", "landmarks_window_dense",
        "identity_error", "identity_ci95")
    for f in FEATURES:
        add(f"landmark kNN acc, {representation(f)}", f"landmark_embeddings_{f}")
    for f in FEATURES:
        add(f"symmetry acc, 64 px window, {representation(f)}", f"symmetry_{f}")
    for f in FEATURES:
        add(f"symmetry acc, paper window, {representation(f)}", f"symmetry_paper_{f}")
    for f in FEATURES:
        add(f"nodule AUC, {representation(f)}", f"classification_{f}", "auc", "auc_ci95")
    for name in ("heart", "lungs", "clavicles"):
        rows[f"Dice {name}, linear"] = metrics["segmentation"]["summary"][name]
    rows["Dice mean, linear 10-shot"] = metrics["segmentation_10shot"]["summary"]["mean"]
    rows["Dice mean, fine-tuned"] = metrics["segmentation_finetune"]["summary"]["mean"]
    add("key-point error px, fine-tuned", "keypoints", "mean_error")
    add("key-point error px, fine-tuned 10-shot", "keypoints_10shot", "mean_error")
    add("key-point error px, mean position (no model)", "keypoints", "mean_position_error", "mean_position_ci95")
    for label, row in rows.items():
        row["text"] = format_ci(row["value"], row["ci95"], 1 if "error px" in label else 3)
    return rows


# The measurements a paired comparison covers: label, the per-trial array in arrays.npz and the
# array of its groups (None: one test image per row), and whether lower is better. Unsuffixed
# names hold the encoder's own representation, so each encoder is measured on the one it trains.
PAIRED = (
    ("landmark error px, dense tokens", "errors_landmarks_dense", "pairs_landmarks_dense", True),
    ("landmark error px, paper window, own representation [window pairs]", "errors_landmarks_window_paper",
     "pairs_landmarks_window_paper", True),
    ("landmark kNN acc, own representation", "correct_landmark_embeddings", "groups_landmark_embeddings", False),
    ("decomposition acc, own representation", "correct_decompositionality", "groups_decompositionality", False),
    ("retrieval acc, own representation", "correct_retrieval", "groups_retrieval", False),
    ("symmetry acc, paper window, own representation", "correct_symmetry_paper", "groups_symmetry_paper", False),
    ("key-point error px, fine-tuned", "errors_keypoints", None, True),
    ("key-point error px, fine-tuned 10-shot", "errors_keypoints_10shot", None, True),
)
# Dice per test image of a DICE_GROUPS group, from metrics.json.
PAIRED_DICE = (("Dice heart, linear", "segmentation", "heart"),
               ("Dice lungs, linear", "segmentation", "lungs"),
               ("Dice mean, linear 10-shot", "segmentation_10shot", "mean"),
               ("Dice mean, fine-tuned", "segmentation_finetune", "mean"))


def paired_differences(a, b):
    """Encoder a minus encoder b, trial by trial: {label: {"value", "ci95", "text", "better"}}.

    a, b: (metrics, arrays) of two evaluations of the same data (metrics.json as a dict,
    arrays.npz as a mapping). The probes draw their trials (images, pairs, patches) from seeds,
    not from the encoder, so trial i is the same question for both; the interval resamples images
    as the single-encoder intervals do, and is narrower than theirs where the two encoders
    succeed and fail on the same trials. "better": True when the interval excludes 0 on a's
    side, False on b's, None when it holds 0. Measurements either evaluation lacks per trial
    (one made before they were kept), or whose trials differ, are left out.
    """
    (ma, xa), (mb, xb) = a, b
    rows = {}

    def add(label, va, vb, groups, lower):
        d = np.asarray(va, float) - np.asarray(vb, float)
        value, ci = float(np.nanmean(d)), probes.bootstrap_ci(d, groups)
        gain = [-c for c in ci] if lower else ci   # the interval of a's advantage
        better = True if min(gain) > 0 else False if max(gain) < 0 else None
        text = format_ci(value, ci, 1 if "error px" in label else 3)
        rows[label] = {"value": value, "ci95": ci, "better": better, "text": ("+" if value >= 0 else "") + text}

    for label, key, group_key, lower in PAIRED:
        if key in xa and key in xb and xa[key].shape == xb[key].shape:
            groups = None if group_key is None else xa.get(group_key)
            if group_key is None or (groups is not None and np.array_equal(groups, xb.get(group_key))):
                add(label, xa[key], xb[key], groups, lower)
    for label, key, group in PAIRED_DICE:
        da, db = ma.get(key, {}).get("dice_per_image"), mb.get(key, {}).get("dice_per_image")
        if da and db and set(da) == set(db):
            va, vb = dice_per_image(da, group), dice_per_image(db, group)
            if va is not None and va.shape == vb.shape:
                add(label, va, vb, None, False)
    return rows


# The no-model landmark references in arrays.npz: their errors on the dense probe's random pairs
# and on the window pairs, and the pairs of each.
REFERENCES = {"NCC template (no model)": ("errors_landmarks_template", "pairs_landmarks_template",
                                          "errors_landmarks_window_template", "pairs_landmarks_window_template"),
              "same coordinates (no model)": ("errors_identity", "pairs_landmarks_dense",
                                              "errors_window_identity", "pairs_landmarks_window_dense")}


def reference_evaluation(arrays, reference):
    """A no-model landmark reference (a key of REFERENCES) of an evaluation, as an evaluation of
    its own for `paired_differences`: its errors under the keys an encoder's landmark errors have,
    so an encoder minus it compares the two on the same pairs. None for an evaluation made before
    the pairs were kept."""
    keys = REFERENCES[reference]
    if not all(k in arrays for k in keys):
        return None
    dense, dense_pairs, window, window_pairs = (arrays[k] for k in keys)
    return {}, {"errors_landmarks_dense": dense, "pairs_landmarks_dense": dense_pairs,
                "errors_landmarks_window_paper": window, "pairs_landmarks_window_paper": window_pairs}


def paper_reference(label):
    """The paper's figure for a headline label, or None."""
    return next((v for k, v in PAPER.items() if label.startswith(k)), None)


def format_ci(value, ci=None, digits=3):
    """"value [lo, hi]" ("-" for a missing value; the interval left out when unknown)."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    if ci is None or None in ci:
        return text
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _marked(features, default):
    """The representation's name, marked when it is the encoder's default."""
    return representation(features) + (" (default)" if features == default else "")


def write_report(path, title, source, metrics, figures, encoder_config):
    """report.md: tables of every measurement with its interval, representation and chance
    level, the landmark tables with their no-model references, and the figures."""
    m = metrics
    default = m["default_features"]
    lines = [f"# {title}", "", f"Data: `{source}`. Encoder: `{json.dumps(encoder_config, sort_keys=True)}`.", "",
             f"Brackets: 95% bootstrap intervals resampling images (1000 resamples). Global embeddings are "
             f"measured on both representations, the mean of the patch tokens and the CLS token; this "
             f"encoder's default (its method's own) is the {representation(default)}.", "",
             "## Properties", "", "| measurement | representation | value [95% CI] | trials | chance |",
             "| --- | --- | --- | --- | --- |"]
    for f in FEATURES:
        r = m[f"compositionality_{f}"]
        lines.append(f"| compositionality: cos(f(patch), mean f(quadrants)) | {_marked(f, default)} | "
                     f"{format_ci(r['mean'], r['ci95'])} (std {r['std']:.3f}) | {r['n']} | - |")
    for key, label in (("decompositionality", "decompositionality: excision accuracy"),
                       ("retrieval", "patch -> image retrieval accuracy"),
                       ("landmark_embeddings", "landmark identity kNN accuracy"),
                       ("symmetry", f"symmetry, {m['landmarks_window']['patch']} px windows"),
                       ("symmetry_paper", f"symmetry, {m['landmarks_window_paper']['patch']} px windows (paper)")):
        for f in FEATURES:
            r = m[f"{key}_{f}"]
            lines.append(f"| {label} | {_marked(f, default)} | {format_ci(r['accuracy'], r['ci95'])} | "
                         f"{r['trials']} | {r['chance']:.3f} |")
    for f in FEATURES:
        lines.append(f"| landmark embedding silhouette | {_marked(f, default)} | "
                     f"{format_ci(m[f'landmark_embeddings_{f}']['silhouette'])} | - | 0 |")
    lines += _landmark_tables(m, default)
    lines += ["", "## Transfer (frozen encoder)", "",
              "Nodule classification, logistic regression on the global embedding of the image:", "",
              "| representation | AUC [95% CI] | accuracy | chance | train / test images |",
              "| --- | --- | --- | --- | --- |"]
    for f in FEATURES:
        c = m[f"classification_{f}"]
        lines.append(f"| {_marked(f, default)} | {format_ci(c['auc'], c['auc_ci95'])} | {c['accuracy']:.3f} | "
                     f"{c['chance']:.3f} | {c['n_train']} / {c['n_test']} |")
    lines += ["", "Segmentation, Dice on the test split [95% CI over test images]: a linear head on the frozen "
              "patch tokens (with 2, 5, 10 training images for few-shot), and the encoder fine-tuned end to end "
              "with that head (few-shot runs take four times the epochs, as their epochs are short):", "",
              "| head | training images | " + " | ".join(m["segmentation"]["dice"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in m["segmentation"]["dice"]) + " |"]
    keys = (["segmentation"] + [f"segmentation_{k}shot" for k in SHOTS]
            + ["segmentation_finetune"] + [f"segmentation_finetune_{k}shot" for k in SHOTS])
    for key in keys:
        r = m[key]
        head = "fine-tuned" if "finetune" in key else "linear, frozen"
        lines.append(f"| {head} | {r['shots']} | "
                     + " | ".join(format_ci(v, r["dice_ci95"][s]) for s, v in r["dice"].items()) + " |")
    lines += _keypoint_table(m)
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({file})" for name, file in figures.items()]
    lines += ["", "Seconds per probe: " + ", ".join(f"{k} {v}" for k, v in m["seconds"].items()), ""]
    Path(path).write_text("\n".join(lines))


def _keypoint_table(m):
    """Key-point detection: the error per key point, fine-tuned on all and on few training images,
    beside the reference that predicts each key point at its mean training position."""
    if "keypoints" not in m:          # evaluations made before the task existed
        return []
    names = m["keypoints"]["point_names"]
    lines = ["", "## Key-point detection (error in pixels of the input images)", "",
             f"The encoder fine-tuned end to end with a heat-map head (output stride "
             f"{m['keypoints']['output_stride']} px of the encoder input, soft-argmax decoding) on the training "
             f"images with landmarks; {m['keypoints']['n_test']} test images [95% CI over them]:", "",
             "| model | training images | mean error [95% CI] | " + " | ".join(names) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    r = m["keypoints"]
    lines.append(f"| mean training position (no model) | {r['shots']} | "
                 f"{format_ci(r['mean_position_error'], r['mean_position_ci95'], 1)} | "
                 + " | ".join(format_ci(v, None, 1) for v in r["mean_position_per_point"]) + " |")
    for key in ["keypoints"] + [f"keypoints_{k}shot" for k in SHOTS]:
        r = m[key]
        lines.append(f"| fine-tuned | {r['shots']} | {format_ci(r['mean_error'], r['ci95'], 1)} | "
                     + " | ".join(format_ci(v, None, 1) for v in r["per_point"]) + " |")
    return lines


def _landmark_tables(m, default):
    """The two landmark correspondence tables, each with its no-model references first."""
    sets = m["landmark_sets"]
    head = ["| method | representation | mean error [95% CI] | median | "
            + " | ".join(STRUCTURE_NAMES) + " |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def row(label, r, identity=False):
        prefix = "identity_" if identity else ""
        mean, ci = r[f"{prefix}error" if identity else "mean_error"], r[f"{prefix}ci95"]
        median = r[f"{prefix}median_error"]
        per = r[f"{prefix}per_structure"]
        rep = "-" if identity else _marked(r["features"], default)
        return (f"| {label} | {rep} | {format_ci(mean, ci, 1)} | {format_ci(median, None, 1)} | "
                + " | ".join(format_ci(per[s], None, 1) for s in LANDMARK_ORDER) + " |")

    dense, template = m["landmarks_dense"], m["landmarks_template"]
    lines = ["", "## Zero-shot landmark correspondence (error in pixels of the input images)", "",
             f"{sets['random_pairs']['pairs']} random ordered pairs of the {sets['random_pairs']['images']} "
             "annotated images:", ""] + head
    lines += [row("same coordinates (no model)", dense, identity=True),
              row(f"NCC of a {template['patch']} px template (no model)", template),
              row("dense tokens", dense)]
    window = m["landmarks_window_dense"]
    lines += ["", f"All {sets['window_pairs']['pairs']} ordered pairs of {len(sets['window_pairs']['images'])} "
              f"annotated images, sliding windows every {m['landmarks_window']['stride']} px (the paper's "
              f"protocol: a {m['landmarks_window_paper']['patch']} px window around the landmark, 224 px on "
              "512 px images):", ""] + head
    lines += [row("same coordinates (no model)", window, identity=True),
              row(f"NCC of a {m['landmarks_window_template']['patch']} px template (no model)",
                  m["landmarks_window_template"]),
              row("dense tokens", window)]
    for key, label in (("landmarks_window_paper", "window"), ("landmarks_window", "window")):
        for f in FEATURES:
            r = m[f"{key}_{f}"]
            lines.append(row(f"{label} {r['patch']} px", r))
    lines += ["", "\"same coordinates\" predicts each landmark at its position in the query image, and NCC "
              "finds the key window whose raw pixels correlate best with the template around the query "
              "landmark: references that learn nothing, which an encoder must beat. A sliding-window "
              "prediction is quantized to the stride."]
    return lines

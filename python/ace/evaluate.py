"""The evaluation suite behind `ace evaluate`: every probe of DESIGN.md section 6 on one
encoder and one labelled data set, written as metrics.json, figures and report.md."""
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import plots, probes
from .data.datasets import LANDMARK_OFFSETS, LANDMARK_ORDER, mirror_pairs
from .data.phantom import LANDMARK_COUNTS

SHOTS = (2, 5, 10)


def budget(quick):
    """Trial counts: --quick keeps a vit_nano evaluation within a few minutes on 2 cores."""
    if quick:
        return dict(images=64, comp_n=48, trials=64, dense_pairs=30, window_pairs=0, embed_images=8,
                    symmetry_images=12, finetune_epochs=5)
    return dict(images=None, comp_n=200, trials=320, dense_pairs=200, window_pairs=6, embed_images=30,
                symmetry_images=None, finetune_epochs=20)


def run_suite(enc, data, out, *, quick=False, progress=True):
    """All probes; returns the metrics dict and writes figures and arrays.npz (per-trial
    compositionality cosines and dense landmark errors) into `out`."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    b = budget(quick)
    size = data.images.shape[-1]
    patch = max(16, int(round(64 * size / 512)))
    unlabelled = data.images[: b["images"]]
    annotated = np.nonzero(~np.isnan(data.landmarks).all(axis=(1, 2)))[0]
    lm_images, lm = data.images[annotated], data.landmarks[annotated]
    train_x, train_y, train_m = data.subset("train")
    test_x, test_y, test_m = data.subset("test")

    metrics, figures, seconds = {}, {}, {}
    tasks = [
        ("compositionality", lambda: probes.compositionality(enc, unlabelled, parts=4, n=b["comp_n"])),
        ("decompositionality", lambda: probes.decompositionality(enc, unlabelled, trials=b["trials"])),
        ("retrieval", lambda: probes.retrieval(enc, unlabelled, trials=b["trials"])),
        ("landmarks_dense", lambda: probes.landmark_correspondence(enc, lm_images, lm, method="dense",
                                                                   pairs=b["dense_pairs"])),
        ("landmark_embeddings", lambda: probes.landmark_embeddings(
            enc, lm_images[: b["embed_images"]], lm[: b["embed_images"]], patch=patch)),
        ("symmetry", lambda: probes.symmetry(enc, lm_images[: b["symmetry_images"]], lm[: b["symmetry_images"]],
                                             mirror_pairs(lm, size), patch=patch)),
        ("classification", lambda: probes.linear_probe_classification(enc, (train_x, train_y), (test_x, test_y))),
        ("segmentation", lambda: probes.segmentation(enc, (train_x, train_m), (test_x, test_m))),
    ]
    tasks.append(("segmentation_finetune", lambda: probes.segmentation(
        enc, (train_x, train_m), (test_x, test_m), mode="finetune", finetune=dict(epochs=b["finetune_epochs"]))))
    for k in SHOTS:
        tasks.append((f"segmentation_{k}shot", lambda k=k: probes.segmentation(
            enc, (train_x, train_m), (test_x, test_m), shots=k)))
        tasks.append((f"segmentation_finetune_{k}shot", lambda k=k: probes.segmentation(
            enc, (train_x, train_m), (test_x, test_m), mode="finetune", shots=k,
            finetune=dict(epochs=b["finetune_epochs"] * 4))))
    if b["window_pairs"]:
        tasks.append(("landmarks_window", lambda: probes.landmark_correspondence(
            enc, lm_images, lm, method="window", patch=patch, stride=max(8, patch // 4), pairs=b["window_pairs"])))
    results = {}
    # t-SNE and the logistic regressions run single-threaded: on two cores their thread pools
    # only fight the encoder's.
    with threadpool_limits(1):
        for name, task in tqdm(tasks, desc="evaluate", unit="probe", disable=not progress):
            start = time.perf_counter()
            results[name] = task()
            seconds[name] = round(time.perf_counter() - start, 1)
    for name, r in results.items():
        metrics[name] = {k: _plain(v) for k, v in r.items() if _is_reported(k, v)}
    metrics["landmarks_dense"]["per_structure"] = per_structure(results["landmarks_dense"]["per_landmark"])
    metrics["seconds"] = seconds

    # Per-trial arrays for figures that compare encoders (see notebooks/compare_pretraining.py).
    np.savez(out / "arrays.npz", compositionality=results["compositionality"]["cosines"],
             landmark_errors=results["landmarks_dense"]["errors"])
    figures["compositionality"] = plots.compositionality_kde(
        {"this encoder": results["compositionality"]["cosines"]}, out / "compositionality_kde.png")
    emb = results["landmark_embeddings"]
    figures["tsne"] = plots.tsne_plot(emb["tsne"], emb["ids"], out / "tsne.png")
    dense = results["landmarks_dense"]
    q, k = (int(i) for i in dense["pair_indices"][0])
    figures["landmarks"] = plots.landmark_predictions(lm_images[q], lm_images[k], lm[k], dense["predicted"][0],
                                                      out / "landmark_predictions.png", true_q=lm[q])
    figures["errors"] = plots.error_boxplot({"dense": dense["errors"]}, out / "landmark_errors.png", by="landmark")
    return metrics, {name: Path(p).name for name, p in figures.items()}


def per_structure(per_landmark):
    """Mean landmark error per structure (right lung, left lung, heart); None if absent."""
    values = np.asarray(per_landmark, float)
    out = {}
    for name in LANDMARK_ORDER:
        part = values[LANDMARK_OFFSETS[name]:LANDMARK_OFFSETS[name] + LANDMARK_COUNTS[name]]
        out[name] = float(np.nanmean(part)) if np.isfinite(part).any() else None
    return out


def _is_reported(key, value):
    """Numbers and small dicts go into metrics.json; per-trial arrays do not."""
    return not isinstance(value, np.ndarray) or key == "per_landmark"


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [None if not np.isfinite(v) else float(v) for v in value.ravel()]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def headline(metrics):
    """One row of numbers for comparison tables."""
    seg = metrics["segmentation"]["dice"]
    return {
        "compositionality cos": metrics["compositionality"]["mean"],
        "decomposition acc": metrics["decompositionality"]["accuracy"],
        "retrieval acc": metrics["retrieval"]["accuracy"],
        "landmark error px (dense)": metrics["landmarks_dense"]["mean_error"],
        "same-coordinates error px": metrics["landmarks_dense"]["identity_error"],
        "landmark kNN acc": metrics["landmark_embeddings"]["accuracy"],
        "symmetry acc": metrics["symmetry"]["accuracy"],
        "nodule AUC": metrics["classification"]["auc"],
        "Dice heart": seg.get("heart"),
        "Dice lungs": np.mean([seg["left_lung"], seg["right_lung"]]).item(),
        "Dice clavicles": np.mean([seg["left_clavicle"], seg["right_clavicle"]]).item(),
        "Dice mean, 10-shot": np.mean(list(metrics["segmentation_10shot"]["dice"].values())).item(),
        "Dice mean, fine-tuned": np.mean(list(metrics["segmentation_finetune"]["dice"].values())).item(),
    }


def write_report(path, title, source, metrics, figures, encoder_config):
    """report.md: tables of every measurement with its chance level, and the figures."""
    def f(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    m = metrics
    lines = [f"# {title}", "", f"Data: `{source}`. Encoder: `{json.dumps(encoder_config, sort_keys=True)}`.", "",
             "## Properties", "", "| measurement | value | trials | chance |", "| --- | --- | --- | --- |",
             f"| compositionality: cos(f(patch), mean f(quadrants)) | {f(m['compositionality']['mean'])} "
             f"(std {f(m['compositionality']['std'])}) | {m['compositionality']['n']} | - |"]
    for key, label in (("decompositionality", "decompositionality: excision accuracy"),
                       ("retrieval", "patch -> image retrieval accuracy"),
                       ("landmark_embeddings", "landmark identity kNN accuracy"),
                       ("symmetry", "symmetry: flipped left -> right accuracy")):
        r = m[key]
        lines.append(f"| {label} | {f(r['accuracy'])} | {r['trials']} | {f(r['chance'])} |")
    lines.append(f"| landmark embedding silhouette | {f(m['landmark_embeddings']['silhouette'])} | - | 0 |")
    lines += ["", "## Zero-shot landmark correspondence (pixels of the input images)", "",
              "| method | mean error | median error | pairs | right lung | left lung | heart | same coordinates |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in ("landmarks_dense", "landmarks_window"):
        if key in m:
            r = m[key]
            ps = per_structure(r["per_landmark"])
            lines.append(f"| {key.split('_')[1]} | {f(r['mean_error'])} | {f(r['median_error'])} | {r['pairs']} | "
                         + " | ".join(f(ps[s]) for s in LANDMARK_ORDER) + f" | {f(r['identity_error'])} |")
    lines += ["", "\"same coordinates\" is the error of predicting each landmark at its pixel position in the "
              "query image: the reference an encoder must beat."]
    c = m["classification"]
    lines += ["", "## Transfer (frozen encoder)", "",
              f"Nodule classification, logistic regression on CLS features: AUC {f(c['auc'])}, accuracy "
              f"{f(c['accuracy'])} (chance {f(c['chance'])}; {c['n_train']} train / {c['n_test']} test images).", "",
              "Segmentation, Dice on the test split: a linear head on the frozen patch tokens (with "
              "2, 5, 10 training images for few-shot), and the encoder fine-tuned end to end with that head "
              "(few-shot runs take four times the epochs, as their epochs are short):", "",
              "| head | training images | " + " | ".join(m["segmentation"]["dice"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in m["segmentation"]["dice"]) + " |"]
    keys = (["segmentation"] + [f"segmentation_{k}shot" for k in SHOTS]
            + ["segmentation_finetune"] + [f"segmentation_finetune_{k}shot" for k in SHOTS])
    for key in keys:
        r = m[key]
        head = "fine-tuned" if "finetune" in key else "linear, frozen"
        lines.append(f"| {head} | {r['shots']} | " + " | ".join(f(v) for v in r["dice"].values()) + " |")
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({file})" for name, file in figures.items()]
    lines += ["", "Seconds per probe: " + ", ".join(f"{k} {v}" for k, v in m["seconds"].items()), ""]
    Path(path).write_text("\n".join(lines))

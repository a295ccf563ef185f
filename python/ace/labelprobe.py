"""`ace evaluate --labels`: a linear probe per label of the user's own data set (see
`ace.data.labels`) on an encoder's frozen embeddings, scored by ROC AUC on a held-out part.

Each label gets its own logistic regression (`probes.fit_linear_probe`) on the images whose
label is known, trained on the train part and scored on the test part: the data set's official
split when it has one, else a seeded split that keeps a patient's images together when the
layout names patients. Labels with a single class in either part are reported as skipped.
"""
import json
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import probes
from .data.images import ImageReadError, read_image, resize
from .errors import ACEError
from .evaluate import _plain, format_ci, representation


def embed_table(enc, table, features, batch_size=32, progress=True):
    """float64 (N, C) global features ("cls" or "mean") of the table's images, read and
    embedded a batch at a time (only the features stay in memory)."""
    from tqdm import tqdm

    size = enc.config["img_size"]
    out = []
    starts = range(0, len(table), batch_size)
    for start in tqdm(starts, desc="embed", unit="batch", disable=not progress):
        batch = []
        for path in table.paths[start:start + batch_size]:
            try:
                batch.append(resize(read_image(path, enc.config["in_chans"]), size))
            except (ImageReadError, OSError) as e:
                raise ACEError(f"cannot read the image {path}: {e}") from None
        cls, tokens = enc.embed(enc.mask_field_of_view(np.stack(batch)), batch_size=batch_size)
        out.append(cls if features == "cls" else tokens.mean(axis=(1, 2)))
    return np.concatenate(out).astype(np.float64)


def probe_labels(features, table, split, C=1.0):
    """{label: probe result} for every label of the table, on the given (N, C) features."""
    results = {}
    for j, name in enumerate(table.names):
        parts = {part: idx[table.known[idx, j]] for part, idx in split.items()}
        y = {part: table.labels[idx, j].astype(np.int64) for part, idx in parts.items()}
        counts = {f"{part}_{kind}": int((y[part] == value).sum())
                  for part in ("train", "test") for kind, value in (("positives", 1), ("negatives", 0))}
        lacking = [part for part in ("train", "test") if len(np.unique(y[part])) < 2]
        if lacking:
            results[name] = dict(counts, auc=None, skipped=f"the {lacking[0]} part has "
                                 f"{'no' if len(y[lacking[0]]) == 0 else 'a single class of'} known labels")
            continue
        result = probes.fit_linear_probe(features[parts["train"]], y["train"], features[parts["test"]], y["test"], C)
        results[name] = dict(counts, **result)
    return results


def run_label_probe(enc, table, out, *, features="default", test_fraction=0.3, seed=0, batch_size=32, C=1.0,
                    progress=True):
    """Embed, split, probe every label; writes OUT/embeddings.npz and returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    features = probes.resolve_features(enc, features)
    official = table.split is not None
    split = table.train_test(test_fraction, seed)
    x = embed_table(enc, table, features, batch_size, progress)
    if not np.isfinite(x).all():
        raise ACEError("the encoder returned NaN or infinite embeddings")
    np.savez(out / "embeddings.npz", features=x.astype(np.float32), labels=table.labels, known=table.known,
             names=np.array(table.names), paths=np.array([str(p) for p in table.paths]),
             train=split["train"], test=split["test"])
    # The logistic regressions run single-threaded, as in the evaluation suite.
    with threadpool_limits(1):
        results = probe_labels(x, table, split, C)
    aucs = [r["auc"] for r in results.values() if r["auc"] is not None]
    by = "patient" if table.groups is not None else "image"
    return {
        "labels": results,
        "mean_auc": float(np.mean(aucs)) if aucs else None,
        "features": features,
        "split": "official" if official else f"seeded: {test_fraction:g} of the {by}s in test, seed {seed}",
        "n_train": int(len(split["train"])), "n_test": int(len(split["test"])),
        "format": table.format, "source": table.source, "images": len(table),
    }


def write_label_report(path, title, metrics):
    m = metrics
    lines = [f"# {title}", "", f"Labels: {m['source']} ({m['format']}, {m['images']} images). "
             f"Split: {m['split']}; {m['n_train']} train / {m['n_test']} test images.",
             f"Features: {representation(m['features'])} of the frozen encoder; one logistic regression per "
             "label on the images whose label is known.", "",
             "| label | train +/- | test +/- | AUC [95% CI] | accuracy | chance |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in m["labels"].items():
        counts = f"{r['train_positives']}/{r['train_negatives']} | {r['test_positives']}/{r['test_negatives']}"
        if r["auc"] is None:
            lines.append(f"| {name} | {counts} | skipped: {r['skipped']} | - | - |")
        else:
            lines.append(f"| {name} | {counts} | {format_ci(r['auc'], r['auc_ci95'])} | {r['accuracy']:.3f} | "
                         f"{r['chance']:.3f} |")
    lines += ["", f"Mean AUC over the probed labels: {format_ci(m['mean_auc'])}", ""]
    Path(path).write_text("\n".join(lines))


def write_outputs(out, title, metrics):
    out = Path(out)
    (out / "metrics.json").write_text(json.dumps(_plain(metrics), indent=2) + "\n")
    write_label_report(out / "report.md", title, metrics)

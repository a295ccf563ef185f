"""Figures of the probes in `ace.probes`: each function writes one PNG and returns its path.

matplotlib runs on the Agg backend, so figures can be written without a display.
"""
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

__all__ = ["compositionality_kde", "tsne_plot", "landmark_predictions", "error_boxplot", "loss_curves",
           "attention_maps", "gradcam_overlay"]


def _save(fig, path):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def compositionality_kde(results_by_name, path):
    """Density (Gaussian KDE) of the compositionality cosines of each method (Fig. 3).

    results_by_name: {method name: cosines array}. A method whose cosines are all equal
    has no density; it is drawn as a vertical line at that value.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    values = [np.asarray(v, np.float64) for v in results_by_name.values()]
    lo = max(-1.0, min(v.min() for v in values) - 0.05)
    hi = min(1.0, max(v.max() for v in values) + 0.05)
    grid = np.linspace(lo, hi, 400)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (name, v) in enumerate(zip(results_by_name, values)):
        label = f"{name} ({v.mean():.3f} ± {v.std():.3f})"
        color = colors[n % len(colors)]
        if np.ptp(v) > 0:
            ax.plot(grid, gaussian_kde(v)(grid), label=label, color=color)
        else:
            ax.axvline(v[0], label=label, color=color)
    ax.set_xlabel("cos(f(patch), mean f(parts))")
    ax.set_ylabel("density")
    ax.set_title("Compositionality")
    ax.legend()
    return _save(fig, path)


def tsne_plot(tsne, ids, path, names=None, title="t-SNE of landmark embeddings"):
    """t-SNE of landmark embeddings coloured by an integer label per point (Fig. 6): the
    landmark id, or the anatomical structure (see `ace.data.datasets.landmark_structures`).

    names: optional sequence indexed by label, used in the legend when there are at most
    20 labels; with more labels the colour bar shows the label.
    """
    tsne, ids = np.asarray(tsne), np.asarray(ids)
    unique = np.unique(ids)
    fig, ax = plt.subplots(figsize=(6, 5))
    if len(unique) <= 20:
        # tab20 pairs light and dark shades of each hue: only worth it past ten ids.
        cmap = plt.get_cmap("tab10" if len(unique) <= 10 else "tab20")
        for n, i in enumerate(unique):
            sel = ids == i
            ax.scatter(tsne[sel, 0], tsne[sel, 1], s=12, color=cmap(n),
                       label=names[i] if names is not None else str(i))
        ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1, 0.5))
    else:
        points = ax.scatter(tsne[:, 0], tsne[:, 1], c=ids, s=8, cmap="turbo")
        fig.colorbar(points, ax=ax, label="landmark")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _save(fig, path)


def landmark_predictions(image_q, image_k, true_k, pred_k, path, true_q=None):
    """Query image (with its landmarks when `true_q` is given) beside the key image with
    its true landmarks (green), the predicted ones (red) and a line from each true point
    to its prediction (Fig. 7). Points are (L, 2) x, y; NaN rows are skipped."""
    true_k, pred_k = np.asarray(true_k, np.float64), np.asarray(pred_k, np.float64)
    fig, (ax_q, ax_k) = plt.subplots(1, 2, figsize=(10, 5))
    ax_q.imshow(image_q, cmap="gray")
    ax_q.set_title("query")
    if true_q is not None:
        ax_q.scatter(*np.asarray(true_q, np.float64).T, s=10, c="yellow")
    ax_k.imshow(image_k, cmap="gray")
    ok = ~(np.isnan(true_k).any(1) | np.isnan(pred_k).any(1))
    for (xt, yt), (xp, yp) in zip(true_k[ok], pred_k[ok]):
        ax_k.plot([xt, xp], [yt, yp], color="orange", linewidth=0.8)
    ax_k.scatter(*true_k[ok].T, s=10, c="lime", label="true")
    ax_k.scatter(*pred_k[ok].T, s=10, c="red", label="predicted")
    ax_k.legend(loc="lower right", fontsize=8)
    ax_k.set_title("key")
    for ax in (ax_q, ax_k):
        ax.axis("off")
    return _save(fig, path)


def error_boxplot(errors_by_name, path, by="method"):
    """Landmark correspondence errors (Fig. 7).

    errors_by_name: {method: (P, L) errors in pixels, NaN = missing}.
    by="method": one box per method, all its errors pooled.
    by="landmark": one panel per method, one box per landmark.
    """
    names = list(errors_by_name)
    errors = [np.asarray(errors_by_name[n], np.float64) for n in names]
    if by == "method":
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(names), 4))
        ax.boxplot([e[~np.isnan(e)] for e in errors], showfliers=False)
        # Long names would run into each other: slant them.
        slant = dict(rotation=25, ha="right") if max(map(len, names)) > 10 else {}
        ax.set_xticks(range(1, len(names) + 1), names, **slant)
        ax.set_ylabel("error (px)")
        ax.set_title("Landmark correspondence error")
    elif by == "landmark":
        width = max(6, 0.12 * max(e.shape[1] for e in errors))
        fig, axes = plt.subplots(len(names), 1, figsize=(width, 2.5 * len(names)), squeeze=False, sharey=True,
                                 layout="constrained")
        for ax, name, e in zip(axes[:, 0], names, errors):
            ax.boxplot([col[~np.isnan(col)] for col in e.T], showfliers=False, widths=0.6)
            step = max(1, e.shape[1] // 20)
            ax.set_xticks(range(1, e.shape[1] + 1, step), range(0, e.shape[1], step))
            ax.set_ylabel("error (px)")
            ax.set_title(name)
        axes[-1, 0].set_xlabel("landmark")
    else:
        raise ValueError(f"by must be 'method' or 'landmark', got {by!r}")
    return _save(fig, path)


def loss_curves(history, path, keys=("loss", "global", "comp", "decomp", "comp_acc", "decomp_acc")):
    """Loss terms (and local matching accuracies) over training steps, one panel each with
    its own scale, from a list of `Trainer.step` result dicts.

    The x axis is each entry's "step" (its position when absent); keys missing from the
    history or zero throughout (e.g. the local terms of a DINO-style run) are skipped.
    """
    steps = np.array([h.get("step", i) for i, h in enumerate(history)])
    series = {}
    for key in keys:
        values = np.array([h.get(key, np.nan) for h in history], np.float64)
        if not np.all(np.isnan(values) | (values == 0)):
            series[key] = values
    cols = min(3, max(1, len(series)))
    rows = max(1, math.ceil(len(series) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, layout="constrained")
    for ax, (key, values) in zip(axes.flat, series.items()):
        ax.plot(steps, values, lw=0.8)
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle("Pretraining")
    return _save(fig, path)


# Side of one panel of `attention_maps`, in inches at its dpi: the PNG is exactly
# (heads + 2) * ATTENTION_PANEL * dpi pixels wide and ATTENTION_PANEL * dpi high.
ATTENTION_PANEL = 2.5


def attention_maps(image, maps, path, title=None, dpi=100):
    """The image, then each head's attention map drawn over it, then the mean over heads
    (as DINO shows them): one row of panels. maps: (heads, h, w), e.g. one image of
    `ace.Encoder.attention`; each map is stretched over the whole image (a patch per cell)
    and coloured on its own scale, from its minimum to its maximum (as DINO saves them)."""
    image, maps = np.asarray(image, np.float64), np.asarray(maps, np.float64)
    heads = maps.shape[0]
    panels = [("image", None)] + [(f"head {i}", maps[i]) for i in range(heads)] + [("mean", maps.mean(0))]
    fig, axes = plt.subplots(1, len(panels), figsize=(ATTENTION_PANEL * len(panels), ATTENTION_PANEL), dpi=dpi)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.82 if title else 0.88, wspace=0.04)
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    for ax, (name, m) in zip(axes, panels):
        ax.imshow(image, cmap="gray", extent=extent)
        if m is not None:
            ax.imshow(m, cmap="inferno", alpha=0.6, extent=extent, interpolation="nearest",
                      vmin=float(m.min()), vmax=max(float(m.max()), float(m.min()) + 1e-12))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _save_panels(fig, path, title, dpi)


def gradcam_overlay(image, heatmap, path, box=None, title=None, dpi=100):
    """The image beside the same image with a Grad-CAM heat map (H, W) in [0, 1] drawn over it,
    its peak marked (+) and, when given, the annotated box (x0, y0, x1, y1 pixels) outlined."""
    image, heatmap = np.asarray(image, np.float64), np.asarray(heatmap, np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(2 * ATTENTION_PANEL, ATTENTION_PANEL), dpi=dpi)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.82 if title else 0.88, wspace=0.04)
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    peak_y, peak_x = np.unravel_index(heatmap.argmax(), heatmap.shape)
    for ax, name in zip(axes, ("image", "Grad-CAM")):
        ax.imshow(image, cmap="gray", extent=extent, vmin=0, vmax=1)
        if name == "Grad-CAM":
            ax.imshow(heatmap, cmap="jet", alpha=0.45, extent=extent, vmin=0, vmax=1)
            ax.plot(peak_x, peak_y, "w+", markersize=10, markeredgewidth=2)
        if box is not None and np.isfinite(box).all():
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _save_panels(fig, path, title, dpi)


def _save_panels(fig, path, title, dpi):
    """A panel figure's title, then the file (its folder made), closed; returns the path.
    No tight bounding box: every figure of one encoder has the same pixel size."""
    if title:
        fig.suptitle(title, fontsize=9)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

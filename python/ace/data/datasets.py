"""Labelled data sets for evaluation: a JSRT-layout folder, or phantoms standing in for it.

A `LabelledSet` holds, for N images: the names, images float32 (N, S, S) in [0, 1], a
binary label per image, masks per structure (N, S, S) bool, landmarks float32 (N, L, 2)
x, y (NaN where not annotated), and index arrays of a train / val / test split.
"""
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import phantom
from .images import ImageReadError, read_image, resize
from .jsrt import LANDMARK_COUNTS, LANDMARK_OFFSETS, LANDMARK_ORDER, LANDMARKS, STRUCTURES
# The key points of the key-point detection task (paper App. B.2): seven distinct anatomical points
# among the HybridGNet contour landmarks, where a contour turns (its segments' ends, see
# phantom._SEGMENTS), as (structure, index within the structure). On the JSRT landmarks the mean
# positions agree: the lung apices are the top points, the costophrenic angles the lowest
# lateral ones, the right cardiophrenic angle meets the heart's first point, the cardiac apex the
# lowest left-heart point; the aortic knob is the top of the left lung's mediastinal border.
KEYPOINTS = {"right apex": ("right_lung", 0), "right costophrenic angle": ("right_lung", 21),
             "right cardiophrenic angle": ("right_lung", 29), "left apex": ("left_lung", 0),
             "left costophrenic angle": ("left_lung", 21), "cardiac apex": ("left_lung", 27),
             "aortic knob": ("left_lung", 40)}


@dataclass
class LabelledSet:
    names: list
    images: np.ndarray
    labels: np.ndarray
    masks: dict
    landmarks: np.ndarray
    split: dict
    source: str

    def subset(self, part):
        """(images, labels, masks) of one split part."""
        idx = self.split[part]
        return self.images[idx], self.labels[idx], {k: v[idx] for k, v in self.masks.items()}


def load_jsrt(root, size=512):
    """A JSRT-layout folder: images/NAME.png, masks/STRUCT/NAME.png, split.json,
    landmarks_dev.csv (image, structure, index, x, y on the 512 px images). The label is
    1 for a nodule case (names starting JPCLN), 0 otherwise."""
    root = Path(root)
    split_names, names, index = _jsrt_split(root)
    images = np.zeros((len(names), size, size), np.float32)
    masks = {s: np.zeros((len(names), size, size), bool) for s in STRUCTURES}
    for i, name in enumerate(names):
        images[i] = resize(read_image(root / "images" / f"{name}.png"), size)
        for s in STRUCTURES:
            path = root / "masks" / s / f"{name}.png"
            if not path.is_file():
                raise ImageReadError(f"{path}: mask missing")
            masks[s][i] = resize(read_image(path), size) > 0.5
    landmarks = np.full((len(names), LANDMARKS, 2), np.nan, np.float32)
    csv_path = root / "landmarks_dev.csv"
    if csv_path.is_file():
        scale = size / 512
        with csv_path.open() as f:
            for row in csv.DictReader(f):
                if row["image"] in index and row["structure"] in LANDMARK_OFFSETS:
                    k = LANDMARK_OFFSETS[row["structure"]] + int(row["index"])
                    landmarks[index[row["image"]], k] = (float(row["x"]) * scale, float(row["y"]) * scale)
    labels = np.array([n.startswith("JPCLN") for n in names], np.int64)
    split = {part: np.array([index[n] for n in part_names]) for part, part_names in split_names.items()}
    return LabelledSet(names, images, labels, masks, landmarks, split, str(root))


def phantom_set(n=60, size=256, seed=0):
    """n phantoms with exact masks and landmarks; the label is whether the phantom's heart
    is wider than the median (a structure-level property a probe can find); split 60/20/20."""
    images, cohort = phantom.batch(range(seed, seed + n), size=size)
    masks = {s: np.stack([p.masks[s] for p in cohort]) for s in STRUCTURES}
    widths = masks["heart"].any(axis=1).sum(axis=1)
    labels = (widths > np.median(widths)).astype(np.int64)
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    split = {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:])}
    return LabelledSet([f"phantom{s}" for s in range(seed, seed + n)], images, labels, masks,
                       phantom.landmark_array(cohort), split, "phantom")


@dataclass
class LesionSet:
    """Images with an image-level label (1: a lesion) and, for the lesion images, where the lesion
    is: centre (N, 2) x, y and radius (N,) in pixels, NaN where there is none or it is unknown."""
    names: list
    images: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    radii: np.ndarray
    split: dict
    source: str


def lesion_phantoms(n=48, size=64, seed=0, radius=None, contrast=-0.9):
    """n phantoms, every second one with a synthetic lesion: a disk with a soft edge of `radius`
    pixels (default 5/32 of the side: 10 px on 64 px images) that adds `contrast` to the
    intensity (default dark, to black inside the lungs), centred at a random point of either lung
    field at least half a radius inside it. Split 60/20/20 as `phantom_set`."""
    radius = size * 5 / 32 if radius is None else radius
    images, cohort = phantom.batch(range(seed, seed + n), size=size)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centres = np.full((n, 2), np.nan)
    yy, xx = np.mgrid[:size, :size]
    for i in np.flatnonzero(labels):
        lungs = cohort[i].masks["left_lung"] | cohort[i].masks["right_lung"]
        inner = ndimage.binary_erosion(lungs, iterations=max(1, int(np.ceil(radius / 2))))
        ys, xs = np.nonzero(inner if inner.any() else lungs)
        k = rng.integers(len(ys))
        centres[i] = xs[k], ys[k]
        disk = 1 / (1 + np.exp((np.hypot(xx - xs[k], yy - ys[k]) - radius) / 0.7))
        images[i] = np.clip(images[i] + contrast * disk, 0, 1)
    radii = np.where(labels == 1, radius, np.nan)
    order = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    split = {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:])}
    return LesionSet([f"phantom{s}" for s in range(seed, seed + n)], images, labels, centres, radii, split,
                     "phantom lesions")


def load_jsrt_nodules(root, size=512):
    """A JSRT-layout folder's images with their nodule label (names starting JPCLN) and, from
    nodules.csv when present, each nodule's centre and radius (columns x_512, y_512,
    radius_px_512, scaled to `size`); split from split.json."""
    root = Path(root)
    split_names, names, index = _jsrt_split(root)
    images = np.stack([resize(read_image(root / "images" / f"{name}.png"), size) for name in names])
    centres, radii = np.full((len(names), 2), np.nan), np.full(len(names), np.nan)
    csv_path = root / "nodules.csv"
    if csv_path.is_file():
        scale = size / 512
        with csv_path.open() as f:
            for row in csv.DictReader(f):
                if row["image"] in index and row.get("x_512"):
                    i = index[row["image"]]
                    centres[i] = float(row["x_512"]) * scale, float(row["y_512"]) * scale
                    radii[i] = float(row["radius_px_512"]) * scale
    labels = np.array([n.startswith("JPCLN") for n in names], np.int64)
    split = {part: np.array([index[n] for n in part_names]) for part, part_names in split_names.items()}
    return LesionSet(names, images.astype(np.float32), labels, centres, radii, split, str(root))


def landmark_ids(structure):
    """The landmark ids (indices into the landmark arrays) of one structure of LANDMARK_ORDER."""
    return np.arange(LANDMARK_OFFSETS[structure], LANDMARK_OFFSETS[structure] + LANDMARK_COUNTS[structure])


def keypoint_ids():
    """The landmark ids (indices into the landmark arrays) of the KEYPOINTS, in their order."""
    return np.array([LANDMARK_OFFSETS[structure] + index for structure, index in KEYPOINTS.values()])


def landmark_structures(ids):
    """The structure of each landmark id, as an index into LANDMARK_ORDER (right lung, left
    lung, heart: the HybridGNet order of the landmark arrays)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= LANDMARKS):
        raise ValueError(f"landmark ids must lie in [0, {LANDMARKS - 1}], got values in [{ids.min()}, {ids.max()}]")
    return np.searchsorted([LANDMARK_OFFSETS[s] for s in LANDMARK_ORDER], ids, side="right") - 1


def mirror_pairs(landmarks, width, max_distance=12.0):
    """(left lung, right lung) landmark index pairs of mirror structures: each right-lung
    landmark's mean position, mirrored about the image's vertical midline, paired with the
    nearest mean left-lung landmark when within `max_distance` pixels."""
    mean = np.nanmean(landmarks, axis=0)
    right, left = landmark_ids("right_lung"), landmark_ids("left_lung")
    pairs = []
    for r in right:
        mirrored = np.array([width - 1 - mean[r, 0], mean[r, 1]])
        d = np.linalg.norm(mean[left] - mirrored, axis=1)
        if np.isfinite(d).any() and np.nanmin(d) <= max_distance:
            pairs.append((int(left[np.nanargmin(d)]), int(r)))
    return pairs


def _jsrt_split(root):
    """A JSRT-layout folder's split.json: (split -> names, all names sorted, name -> index)."""
    split_file = root / "split.json"
    if not (root / "images").is_dir() or not split_file.is_file():
        raise FileNotFoundError(f"{root} is not a JSRT-layout folder (needs images/ and split.json)")
    split_names = json.loads(split_file.read_text())
    names = sorted(n for part in split_names.values() for n in part)
    return split_names, names, {n: i for i, n in enumerate(names)}

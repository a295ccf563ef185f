"""Procedural colour fundus photograph phantom with exact landmarks, and overlapping pairs.

The fundus counterpart of the chest phantom (paper Fig. 10: EyePACS pretraining, FIRE
correspondence). Every image is a photograph of one random eye: a circular field of view
over an orange-red retina with vignetting and a random illumination gradient, the macula
darkening towards the fovea, a bright optic disc with its cup, and a vessel tree leaving the
disc in four arcades that bend around the macula and branch. Per eye the disc-fovea geometry,
the vessel tree, the pigmentation and the illumination vary.

Conventions:

* Images are float32 RGB (H, W, 3) in [0, 1]; points are x, y pixel coordinates (pixel
  centres at integer positions).
* The optic disc lies nasal to the fovea: on the image's right for a right eye, on its left
  for a left eye. A left eye is the mirror image of a right eye drawn from the same seed.
* Landmarks: the disc centre, the fovea, and every vessel bifurcation (where a branch leaves
  its parent vessel), in the order the tree was grown.

`pair` renders one eye once and cuts two overlapping views from it with a known similarity
transform (rotation, scale, shift), as FIRE's image pairs of one eye; the control points are
the bifurcations seen in both views. Only numpy and scipy.ndimage are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

# Retina colour (R, G, B) before pigmentation and illumination; vessels and the disc are
# drawn as multiplicative changes of it.
_RETINA = np.array([0.78, 0.36, 0.16])
_VESSEL = np.array([0.55, 0.35, 0.45])      # fraction of the retina's colour left in a vessel
_DISC = np.array([1.0, 0.85, 0.6])


@dataclass
class Fundus:
    image: np.ndarray          # (size, size, 3) float32 RGB in [0, 1]
    disc: np.ndarray           # (2,) x, y of the optic disc centre
    fovea: np.ndarray          # (2,) x, y of the fovea
    bifurcations: np.ndarray   # (K, 2) x, y of the vessel branch points
    fov: np.ndarray            # (size, size) bool: the circular field of view
    eye: str                   # "left" or "right"

    @property
    def landmarks(self) -> np.ndarray:
        """(2 + K, 2): disc, fovea, then the bifurcations."""
        return np.vstack([self.disc, self.fovea, self.bifurcations])


@dataclass
class FundusPair:
    first: np.ndarray          # (size, size, 3) view 1
    second: np.ndarray         # (size, size, 3) view 2
    matrix: np.ndarray         # (3, 3): x, y, 1 in view 1 -> x, y, 1 in view 2
    points_first: np.ndarray   # (M, 2) control points in view 1 (inside both views)
    points_second: np.ndarray  # (M, 2) the same points in view 2


def generate(seed: int, size: int = 512, eye: str | None = None) -> Fundus:
    """One fundus photograph; `eye` "left" / "right", or None to draw it from the seed."""
    rng = np.random.default_rng(seed)
    side = rng.choice(["left", "right"]) if eye is None else eye
    if side not in ("left", "right"):
        raise ValueError(f"eye must be 'left' or 'right', got {eye!r}")
    image, disc, fovea, forks, fov = _right_eye(rng, size)
    if side == "left":   # the mirror image: x -> size - 1 - x
        image, fov = image[:, ::-1].copy(), fov[:, ::-1].copy()
        for p in (disc, fovea, forks):
            p[..., 0] = size - 1 - p[..., 0]
    return Fundus(image.astype(np.float32), disc, fovea, forks, fov, side)


def batch(seeds, size: int = 512) -> tuple[np.ndarray, list[Fundus]]:
    """(N, size, size, 3) images and their phantoms."""
    eyes = [generate(int(s), size) for s in seeds]
    return np.stack([e.image for e in eyes]), eyes


def pair(seed: int, size: int = 512, rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
         shift: float = 0.15) -> FundusPair:
    """Two overlapping views of one eye. The eye is drawn at 1.5x `size`; each view is a
    `size` crop of it under its own similarity transform (rotation up to +-`rotation`
    degrees, scale in `scale`, centre shifted up to `shift` x size), so the views overlap
    partly and differ by a known transform."""
    rng = np.random.default_rng([seed, 1])
    big = int(round(1.5 * size))
    eye = generate(seed, big)
    views, maps = [], []
    for _ in range(2):
        angle = np.deg2rad(rng.uniform(-rotation, rotation))
        s = rng.uniform(*scale)
        centre = (big - 1) / 2 + rng.uniform(-shift, shift, 2) * size
        # view pixel v -> eye pixel e = centre + s R (v - c_view)
        c, si = np.cos(angle), np.sin(angle)
        to_eye = np.array([[s * c, -s * si, 0], [s * si, s * c, 0], [0, 0, 1.0]])
        to_eye[:2, 2] = centre - to_eye[:2, :2] @ np.full(2, (size - 1) / 2)
        views.append(_warp(eye.image, to_eye, size))
        maps.append(to_eye)
    first_to_second = np.linalg.inv(maps[1]) @ maps[0]
    points = eye.bifurcations
    in_first = _apply(np.linalg.inv(maps[0]), points)
    in_second = _apply(np.linalg.inv(maps[1]), points)
    margin = 8
    inside = np.all((in_first >= margin) & (in_first <= size - 1 - margin)
                    & (in_second >= margin) & (in_second <= size - 1 - margin), axis=1)
    return FundusPair(views[0], views[1], first_to_second, in_first[inside], in_second[inside])


def write_folder(folder, count: int, size: int = 512, first_seed: int = 0, pairs: int = 0) -> Path:
    """Write `count` phantom eyes (seeds first_seed, first_seed + 1, ...) as 8-bit RGB PNGs
    `images/fundus_00000.png` ... into `folder`, with `landmarks.csv` (file, eye, disc_x,
    disc_y, fovea_x, fovea_y, bifurcations). With `pairs`, also `pairs/` holding FIRE-style
    pairs (`pair_00000_a.png`, `..._b.png`, seeds first_seed + count ...) and `pairs/points.csv`
    (pair, point, x_a, y_a, x_b, y_b). For demos and tests: `ace pretrain --modality fundus
    --data folder/images` reads the images like any folder of photographs, `ace evaluate
    --data folder` the pairs. Returns the folder."""
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = ["file,eye,disc_x,disc_y,fovea_x,fovea_y,bifurcations"]
    for i in range(count):
        eye = generate(first_seed + i, size)
        name = f"images/fundus_{i:05d}.png"
        Image.fromarray(_to_uint8(eye.image)).save(folder / name)
        rows.append(f"{name},{eye.eye},{eye.disc[0]:.3f},{eye.disc[1]:.3f},{eye.fovea[0]:.3f},"
                    f"{eye.fovea[1]:.3f},{len(eye.bifurcations)}")
    (folder / "landmarks.csv").write_text("\n".join(rows) + "\n")
    if pairs:
        pair_dir = folder / "pairs"
        pair_dir.mkdir(exist_ok=True)
        rows = ["pair,point,x_a,y_a,x_b,y_b"]
        for k in range(pairs):
            p = pair(first_seed + count + k, size)
            for view, tag in ((p.first, "a"), (p.second, "b")):
                Image.fromarray(_to_uint8(view)).save(pair_dir / f"pair_{k:05d}_{tag}.png")
            rows += [f"{k},{j},{a[0]:.3f},{a[1]:.3f},{b[0]:.3f},{b[1]:.3f}"
                     for j, (a, b) in enumerate(zip(p.points_first, p.points_second))]
        (pair_dir / "points.csv").write_text("\n".join(rows) + "\n")
    return folder


def read_pairs(folder) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs `write_folder` wrote (folder or its `pairs/`): a list of (image a, image b,
    points a, points b), images float32 (H, W, 3) in [0, 1], points (M, 2) x, y."""
    from .images import read_image

    folder = Path(folder)
    if (folder / "pairs" / "points.csv").exists():
        folder = folder / "pairs"
    table = np.loadtxt(folder / "points.csv", delimiter=",", skiprows=1, ndmin=2)
    out = []
    for k in sorted({int(v) for v in table[:, 0]}):
        rows = table[table[:, 0] == k]
        a, b = (read_image(folder / f"pair_{k:05d}_{tag}.png", channels=3) for tag in "ab")
        out.append((a, b, rows[:, 2:4], rows[:, 4:6]))
    return out


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- drawing


def _right_eye(rng: np.random.Generator, size: int):
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (size - 1) / 2
    radius = 0.47 * size
    r = np.hypot(xs - centre, ys - centre)
    fov = r <= radius

    fovea = np.array([centre + rng.normal(0, 0.03) * size, centre + rng.normal(0, 0.03) * size])
    disc_r = size * rng.uniform(0.042, 0.052)
    angle = np.deg2rad(rng.normal(-6, 4))               # the disc sits a little above the fovea
    distance = disc_r * 2 * rng.uniform(2.3, 2.7)        # about 2.5 disc diameters
    disc = fovea + distance * np.array([np.cos(angle), np.sin(angle)])

    pigment = rng.uniform(0.75, 1.15) * _RETINA * rng.uniform(0.9, 1.1, 3)
    image = np.ones((size, size, 3)) * pigment
    # Choroidal texture, the macula, the fovea.
    image *= 1 + 0.05 * _noise(rng, size, size * 0.02)[..., None]
    d_fovea = np.hypot(xs - fovea[0], ys - fovea[1])
    image *= (1 - 0.35 * np.exp(-(d_fovea / (0.09 * size)) ** 2)
              - 0.25 * np.exp(-(d_fovea / (0.015 * size)) ** 2))[..., None]
    # Vessels, then the disc over them.
    vessels, forks = _vessel_tree(rng, disc, fovea, disc_r, size)
    image *= 1 - vessels[..., None] * (1 - _VESSEL)
    d_disc = np.hypot(xs - disc[0], ys - disc[1])
    rim = 1 / (1 + np.exp((d_disc - disc_r) / (0.08 * disc_r)))
    cup = np.exp(-(d_disc / (0.45 * disc_r)) ** 2)
    image = image * (1 - rim[..., None]) + rim[..., None] * (_DISC * (0.85 + 0.15 * cup[..., None]))
    # Illumination: vignetting towards the rim of the field and a random gradient.
    gradient = 1 + 0.15 * ((xs - centre) * rng.normal() + (ys - centre) * rng.normal()) / size
    vignette = 1 - 0.35 * (r / radius) ** 4
    image *= (rng.uniform(0.85, 1.1) * gradient * vignette)[..., None]
    image = ndimage.gaussian_filter(image, (0.7, 0.7, 0))
    image += rng.normal(0, 0.008, image.shape)
    image = np.clip(image, 0, 1) * fov[..., None]
    forks = np.array(forks, np.float64).reshape(-1, 2)
    forks = forks[np.hypot(forks[:, 0] - centre, forks[:, 1] - centre) <= radius - 4]   # visible ones
    return image, disc, fovea, forks, fov


def _vessel_tree(rng, disc, fovea, disc_r, size):
    """Four arcades from the disc (superior/inferior temporal, bending around the macula, and
    superior/inferior nasal), each branching recursively. Returns the vessel opacity map in
    [0, 1] and the branch points."""
    opacity = np.zeros((size, size))
    forks = []
    towards_fovea = np.arctan2(fovea[1] - disc[1], fovea[0] - disc[0])
    width = 0.0065 * size
    arcades = [(towards_fovea - 0.9, +1), (towards_fovea + 0.9, -1),     # temporal: bend to the macula
               (towards_fovea + np.pi + 0.7, 0), (towards_fovea + np.pi - 0.7, 0)]
    for heading, bend in arcades:
        start = disc + 0.6 * disc_r * np.array([np.cos(heading), np.sin(heading)])
        _grow(rng, opacity, forks, start, heading + rng.normal(0, 0.1), bend * 0.012, width,
              length=size * rng.uniform(0.45, 0.6), depth=3, size=size)
    return np.clip(opacity, 0, 1), forks


def _grow(rng, opacity, forks, point, heading, curvature, width, length, depth, size):
    step = size / 128
    n = max(2, int(length / step))
    path = [np.array(point, np.float64)]
    branch_at = set(rng.choice(np.arange(n // 5, n - 2), size=min(depth, max(0, n - 2 - n // 5)),
                               replace=False).tolist()) if depth > 0 else set()
    for i in range(1, n):
        heading += curvature + rng.normal(0, 0.04)
        nxt = path[-1] + step * np.array([np.cos(heading), np.sin(heading)])
        if not (0 <= nxt[0] < size and 0 <= nxt[1] < size):
            break
        path.append(nxt)
        if i in branch_at:
            forks.append(nxt.copy())
            side = rng.choice([-1, 1])
            _grow(rng, opacity, forks, nxt, heading + side * rng.uniform(0.5, 0.9), curvature * 0.5,
                  width * 0.7, length * rng.uniform(0.35, 0.55), depth - 1, size)
            width *= 0.85
    _stroke(opacity, np.array(path), width)


def _stroke(opacity, path, width):
    """Max-composite a vessel of Gaussian cross-section along a polyline."""
    size = opacity.shape[0]
    reach = int(np.ceil(2.5 * width)) + 1
    for a, b in zip(path[:-1], path[1:]):
        x0, y0 = np.floor(np.minimum(a, b)).astype(int) - reach
        x1, y1 = np.ceil(np.maximum(a, b)).astype(int) + reach
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size - 1), min(y1, size - 1)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        ab = b - a
        t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0, 1)
        d = np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))
        profile = np.exp(-(d / width) ** 2)
        block = opacity[y0:y1 + 1, x0:x1 + 1]
        np.maximum(block, profile, out=block)


def _noise(rng, size, sigma):
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)
    return field / (field.std() + 1e-12)


def _warp(image, to_source, size):
    """The size x size view whose pixel (x, y) shows image at to_source @ (x, y, 1)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = to_source[0, 0] * xs + to_source[0, 1] * ys + to_source[0, 2]
    sy = to_source[1, 0] * xs + to_source[1, 1] * ys + to_source[1, 2]
    return np.stack([ndimage.map_coordinates(image[..., c], [sy, sx], order=1, mode="constant")
                     for c in range(3)], -1).astype(np.float32)


def _apply(matrix, points):
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:2, :2].T + matrix[:2, 2]

"""Procedural chest-radiograph phantom with exact masks and landmarks.

The phantom is the data set ACE falls back on when the user brings none, and the
one tests use when they need images without real data. Every image is a
posterior-anterior chest radiograph drawn from a random "patient": body
silhouette, two lungs, heart, mediastinum with trachea, spine, ribs, clavicles
and diaphragm domes, with per-patient variation of shape, size, position, a
small rotation and exposure, plus noise and blur.

Conventions follow the JSRT/SCR/HybridGNet data in ``../shared/data/jsrt``:

* "left"/"right" are the patient's sides: the patient's right lung is on the
  image's left.
* Lung masks exclude the heart (their medial lower border *is* the heart
  border); the clavicle masks cover only the part of each clavicle that lies
  over its lung field, as in the SCR annotations.
* Landmarks are x, y pixel coordinates (pixel centres at integer positions):
  right lung 44, left lung 50, heart 26 points, in the same anatomical order
  on every image. Each contour is split at anatomical key points (apex,
  costophrenic angle, cardiophrenic angle, heart corners) and every segment is
  sampled at equal arc-length steps, so point ``i`` means the same place on
  every patient.

Each contour is one polyline, used both to rasterise the structure's mask and
to sample its landmarks, so landmarks lie on the mask boundary to within a
pixel. Only numpy and scipy.ndimage are used; one 512 x 512 phantom takes well
under 0.2 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

# The ground truth comes in the layout of the real data (structures, landmark counts and order).
from .jsrt import LANDMARK_COUNTS, LANDMARK_ORDER, STRUCTURES  # noqa: F401  (STRUCTURES: phantom.STRUCTURES)

# Spline sampling step in pixels: dense enough that the polyline used for the
# masks and the landmarks is the smooth curve to well under a pixel.
_STEP = 0.5


@dataclass(frozen=True)
class Phantom:
    """One synthetic radiograph with its ground truth.

    image: float32 (size, size) in [0, 1], bone and soft tissue bright.
    masks: name -> bool (size, size) for each of ``STRUCTURES``.
    landmarks: name -> float32 (K, 2) x, y pixel coordinates for each of
        ``LANDMARK_ORDER`` (K from ``LANDMARK_COUNTS``).
    seed: the seed the phantom was generated from.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    landmarks: dict[str, np.ndarray]
    seed: int


def generate(seed: int, size: int = 512) -> Phantom:
    """Draw the phantom of patient ``seed`` at ``size`` x ``size`` pixels.

    The same (seed, size) always gives the same phantom.
    """
    if size < 32:
        raise ValueError(f"phantom size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    anatomy = _Anatomy(rng, size)
    angle = np.deg2rad(rng.uniform(-5.0, 5.0))
    centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0])

    def rotate(points: np.ndarray) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        d = points - centre
        return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], axis=1) + centre

    # The image is drawn upright and then rotated; masks and landmarks come
    # from the rotated contours, so all three share the same rotation.
    upright = _render(anatomy, rng, size)
    image = _rotate_image(upright, angle)
    image = _expose(image, rng, size)

    masks = {name: _rasterize(rotate(poly), size) for name, poly in anatomy.outlines.items()}
    for side in ("left", "right"):
        masks[f"{side}_clavicle"] &= _rasterize(rotate(anatomy.lung_fields[side]), size)
    landmarks = {
        name: rotate(_sample_landmarks(*anatomy.contours[name], _SEGMENTS[name])).astype(np.float32)
        for name in LANDMARK_ORDER
    }
    return Phantom(image=image, masks=masks, landmarks=landmarks, seed=int(seed))


def batch(seeds: Iterable[int], size: int = 512) -> tuple[np.ndarray, list[Phantom]]:
    """Generate one phantom per seed; return (images float32 (N, size, size), phantoms)."""
    phantoms = [generate(s, size) for s in seeds]
    images = np.stack([p.image for p in phantoms]) if phantoms else np.zeros((0, size, size), np.float32)
    return images, phantoms


def landmark_array(
    phantoms: Sequence[Phantom], order: Sequence[str] = LANDMARK_ORDER
) -> np.ndarray:
    """Stack landmarks as float32 (N, K, 2) x, y, structures concatenated in ``order``.

    The default order gives the HybridGNet layout used for the JSRT landmarks
    (``landmarks_dev.csv`` rows ``structure, index`` map to row
    ``offset[structure] + index``): right lung 0-43, left lung 44-93, heart 94-119.
    """
    for name in order:
        if name not in LANDMARK_COUNTS:
            raise ValueError(f"unknown landmark structure {name!r}; expected one of {LANDMARK_ORDER}")
    k = sum(LANDMARK_COUNTS[name] for name in order)
    if not phantoms:
        return np.zeros((0, k, 2), np.float32)
    return np.stack(
        [np.concatenate([p.landmarks[name] for name in order]) for p in phantoms]
    ).astype(np.float32)


# ---------------------------------------------------------------------------
# Geometry: splines, contours, rasterisation, landmark sampling.

# Landmarks per segment between consecutive key points of each contour.
_SEGMENTS = {
    # apex -> costophrenic angle -> cardiophrenic angle -> (heart, mediastinum) -> apex
    "right_lung": (21, 8, 15),
    # apex -> costophrenic -> cardiac apex -> (heart border) aortic knob -> apex
    "left_lung": (21, 6, 13, 10),
    # right cardiophrenic -> top of right border -> top of left border -> cardiac apex -> (bottom)
    "heart": (6, 7, 5, 8),
}


def _spline(points: np.ndarray, closed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Densely sample a centripetal Catmull-Rom spline through ``points``.

    Centripetal parametrisation never overshoots into loops or cusps, whatever
    the spacing of the jittered control points. Returns the dense polyline
    (open: both end points included; closed: first point not repeated) and the
    index of every control point in it.
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
    else:
        ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    pieces, index, count = [], [], 0
    for i in range(n if closed else n - 1):
        p0, p1, p2, p3 = ext[i : i + 4]
        m = max(2, int(np.ceil(np.linalg.norm(p2 - p1) / _STEP)))
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0), 1e-6) ** 0.5
        t2 = t1 + max(np.linalg.norm(p2 - p1), 1e-6) ** 0.5
        t3 = t2 + max(np.linalg.norm(p3 - p2), 1e-6) ** 0.5
        t = np.linspace(t1, t2, m, endpoint=False)[:, None]
        a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
        a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
        a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
        b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
        b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
        pieces.append(((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1))
        index.append(count)
        count += m
    if not closed:
        pieces.append(p[-1:])
        index.append(count)
    return np.concatenate(pieces), np.array(index)


def _join(pieces: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Join open polylines end to start into one closed polyline.

    Each piece starts where the previous one ends (the last one ends where the
    first starts); the shared points are kept once. Returns the polyline and
    the offset of each piece in it.
    """
    offsets, total = [], 0
    for piece in pieces:
        offsets.append(total)
        total += len(piece) - 1
    return np.concatenate([piece[:-1] for piece in pieces]), offsets


def _rasterize(poly: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the closed polygon.

    Even-odd scanline fill: every edge crossing of a pixel row toggles the
    pixels to its right, accumulated with one bincount and a cumulative sum.
    """
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    lo = np.ceil(np.minimum(y0, y1))
    n = (np.ceil(np.maximum(y0, y1)) - lo).astype(np.int64)
    edge = np.repeat(np.arange(len(poly)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    rows = lo[edge] + (np.arange(len(edge)) - first)
    xs = x0[edge] + (rows - y0[edge]) / (y1[edge] - y0[edge]) * (x1[edge] - x0[edge])
    valid = (rows >= 0) & (rows < size)
    rows = rows[valid].astype(np.int64)
    cols = np.clip(np.ceil(xs[valid]), 0, size).astype(np.int64)
    toggles = np.bincount(rows * (size + 1) + cols, minlength=size * (size + 1))
    return (np.cumsum(toggles.reshape(size, size + 1)[:, :size], axis=1) & 1).astype(bool)


def _sample_landmarks(dense: np.ndarray, keys: Sequence[int], counts: Sequence[int]) -> np.ndarray:
    """Sample ``counts[j]`` points at equal arc-length steps from key j to key j+1.

    ``dense`` is a closed polyline, ``keys`` the indices of its key points in
    contour order (the last segment wraps round to the first key).
    """
    closed = np.concatenate([dense, dense[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    starts = arc[list(keys)]
    ends = np.append(starts[1:], arc[-1] + starts[0])
    s = np.concatenate(
        [np.linspace(a, b, c, endpoint=False) for a, b, c in zip(starts, ends, counts)]
    ) % arc[-1]
    return np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], axis=1)


# ---------------------------------------------------------------------------
# Anatomy: per-patient shapes in pixel coordinates of the upright image.

# Templates in a thorax frame: X runs from -1 (image-left chest wall) to +1
# (image-right chest wall) around the midline, Y from 0 at the lung apices to
# 1 at the right costophrenic angle.
_HEART = np.array([
    (-0.21, 0.85),  # 0  right cardiophrenic angle            (landmark 0)
    (-0.27, 0.73),
    (-0.26, 0.62),
    (-0.18, 0.53),  # 3  top of the right heart border        (landmark 6)
    (0.03, 0.47),
    (0.29, 0.49),   # 5  top of the left heart border         (landmark 13)
    (0.50, 0.60),
    (0.62, 0.75),
    (0.52, 0.87),   # 8  cardiac apex on the left dome        (landmark 18)
    (0.15, 0.90),
])
# Right lung: mediastinal border from the heart up to the apex, then the
# lateral wall down to the costophrenic angle.
_RIGHT_MEDIAL = np.array([(-0.12, 0.40), (-0.10, 0.26), (-0.13, 0.12), (-0.22, 0.03)])
_RIGHT_APEX = np.array([(-0.40, 0.0)])
_RIGHT_LATERAL = np.array([
    (-0.62, 0.04), (-0.79, 0.14), (-0.89, 0.30), (-0.93, 0.48), (-0.96, 0.66), (-0.96, 0.84)
])
_RIGHT_COSTOPHRENIC = np.array([(-0.91, 1.0)])
# Left lung: pulmonary trunk and aortic knob (index 1, a key point) above
# the heart, apex, lateral wall.
_LEFT_MEDIAL = np.array([(0.17, 0.37), (0.22, 0.28), (0.14, 0.18), (0.11, 0.08), (0.20, 0.01)])
_LEFT_APEX = np.array([(0.37, 0.0)])
_LEFT_LATERAL = np.array([
    (0.59, 0.05), (0.77, 0.15), (0.87, 0.31), (0.92, 0.49), (0.96, 0.68), (0.97, 0.86)
])
_LEFT_COSTOPHRENIC = np.array([(0.94, 1.02)])
# Clavicle centre lines for the image-left clavicle, sternal end first; the
# other side is mirrored.
_CLAVICLE = np.array([(-0.09, 0.17), (-0.30, 0.135), (-0.58, 0.11), (-0.85, 0.06), (-1.02, 0.05)])


class _Anatomy:
    """The random shapes of one patient, in pixels of the upright image.

    ``contours`` maps each landmark structure to (dense closed polyline, key
    indices); ``outlines`` maps every mask structure to its closed polygon;
    ``lung_fields`` holds each lung's polygon (for clipping the clavicles).
    Scalar attributes position the analytically drawn parts (spine, ribs,
    trachea, vessels).
    """

    def __init__(self, rng: np.random.Generator, size: int):
        self.size = size
        self.cx = size * (0.5 + rng.normal(0.0, 0.012))
        top = rng.uniform(0.035, 0.1)
        self.top = size * top
        # Keep the lowest costophrenic angle inside the image.
        self.height = size * min(np.clip(rng.normal(0.78, 0.04), 0.68, 0.86), (0.96 - top) / 1.1)
        self.half_width = {"right": size * np.clip(rng.normal(0.365, 0.025), 0.30, 0.43)}
        self.half_width["left"] = self.half_width["right"] * rng.normal(1.0, 0.03)
        jitter = 0.012

        def place(template: np.ndarray, dy: float = 0.0) -> np.ndarray:
            t = template + rng.normal(0.0, jitter, template.shape)
            hw = np.where(t[:, 0] < 0, self.half_width["right"], self.half_width["left"])
            return np.stack([self.cx + t[:, 0] * hw, self.top + (t[:, 1] + dy) * self.height], axis=1)

        # Heart: scaled about its centre (cardiothoracic ratio varies), shifted.
        heart_t = _HEART.copy()
        centre = heart_t.mean(axis=0)
        heart_t = centre + (heart_t - centre) * [rng.uniform(0.85, 1.2), rng.uniform(0.9, 1.1)]
        heart_t += [rng.normal(0.0, 0.04), rng.normal(0.0, 0.02)]
        heart_t[:, 1] = np.minimum(heart_t[:, 1], 0.97)
        heart_ctrl = place(heart_t)
        heart, heart_idx = _spline(heart_ctrl, closed=True)
        self.contours = {"heart": (heart, [heart_idx[0], heart_idx[3], heart_idx[5], heart_idx[8]])}

        # Right lung: medial border + apex + lateral wall as one smooth piece
        # (round apex), diaphragm dome, then the right heart border.
        apex_dy = rng.normal(0.0, 0.015)
        medial = place(_RIGHT_MEDIAL)
        lateral = place(np.concatenate([_RIGHT_APEX, _RIGHT_LATERAL]), apex_dy)
        costo = self._costophrenic(place(_RIGHT_COSTOPHRENIC, rng.normal(0.0, 0.015)), heart[heart_idx[0]])
        wall, wall_idx = _spline(np.concatenate([heart[heart_idx[3]][None], medial, lateral, costo]))
        # The dome meets the heart almost along the straight line, below the
        # heart border, which leaves the cardiophrenic angle rising medially.
        lift = rng.uniform(0.03, 0.08)
        dome = self._dome(costo[0], heart[heart_idx[0]], lift, (0, 0.75, 1, 0.6, 0.08, 0), rng)
        border = heart[heart_idx[0] : heart_idx[3] + 1]
        right, offsets = _join([wall, dome, border])
        apex = wall_idx[1 + len(medial)]
        keys = [0, offsets[1] - apex, offsets[2] - apex]
        self.contours["right_lung"] = (np.roll(right, -apex, axis=0), keys)

        # Left lung: aortic knob + apex + lateral wall, dome down to the
        # cardiac apex, then the left heart border back up to the pulmonary trunk.
        medial = place(_LEFT_MEDIAL)
        lateral = place(np.concatenate([_LEFT_APEX, _LEFT_LATERAL]), apex_dy + rng.normal(0.01, 0.015))
        costo = self._costophrenic(place(_LEFT_COSTOPHRENIC, rng.normal(0.0, 0.02)), heart[heart_idx[8]])
        wall, wall_idx = _spline(np.concatenate([heart[heart_idx[5]][None], medial, lateral, costo]))
        # This dome rises gently from the costophrenic angle (the steep line
        # to the cardiac apex would otherwise pinch the angle thinner than a
        # pixel) and meets the cardiac apex almost along the straight line, so
        # it never folds against the heart border.
        lift = rng.uniform(0.0, 0.05)
        dome = self._dome(costo[0], heart[heart_idx[8]], lift, (0, 0.35, 0.9, 0.6, 0.12, 0), rng)
        border = heart[heart_idx[5] : heart_idx[8] + 1][::-1]
        left, offsets = _join([wall, dome, border])
        apex = wall_idx[1 + len(medial)]
        n = len(left)
        keys = [0, offsets[1] - apex, offsets[2] - apex, (wall_idx[2] - apex) % n]
        self.contours["left_lung"] = (np.roll(left, -apex, axis=0), keys)

        self.lung_fields = {"right": self.contours["right_lung"][0], "left": self.contours["left_lung"][0]}
        self.outlines = {
            "heart": heart,
            "right_lung": self.lung_fields["right"],
            "left_lung": self.lung_fields["left"],
        }
        clavicle_dy = rng.normal(0.0, 0.025)
        for side, sign in (("right", 1.0), ("left", -1.0)):
            line = place(_CLAVICLE * [sign, 1.0], clavicle_dy + rng.normal(0.0, 0.01))
            thickness = size * rng.uniform(0.03, 0.038)
            self.outlines[f"{side}_clavicle"] = _band(line, thickness)

        # Analytic parts.
        self.spine_x = self.cx + size * rng.normal(0.0, 0.006)
        self.spine_half_width = size * rng.uniform(0.033, 0.042)
        self.carina_y = self.top + self.height * rng.uniform(0.33, 0.42)
        self.rib_shape = rng.normal(1.0, 0.08, 3)
        self.rib_phase = rng.uniform(-0.02, 0.02)
        self.rib_jitter = rng.normal(0.0, 0.008, (2, 11))
        self.hila = {
            "right": place(np.array([(-0.30, 0.48)])),
            "left": place(np.array([(0.30, 0.46)])),
        }
        self.air = rng.uniform(0.8, 1.2)  # how much air the lungs hold
        self.body_half_width = max(self.half_width.values()) * rng.uniform(1.2, 1.45)
        # Stomach gas bubble under the left dome: x, y, radius, how much gas.
        bx, by = place(np.array([(0.55, 1.08)]))[0]
        self.bubble = (bx, by, size * rng.uniform(0.03, 0.06), rng.uniform(0.0, 0.12))

    @staticmethod
    def _costophrenic(costo: np.ndarray, medial: np.ndarray) -> np.ndarray:
        """Raise the costophrenic angle if the line to the dome's medial end
        would fall more steeply than 55 degrees: that pinches the angle into a
        needle thinner than a pixel."""
        drop = costo[0, 1] - medial[1]
        limit = np.tan(np.radians(55.0)) * abs(medial[0] - costo[0, 0])
        return costo - [0.0, max(0.0, drop - limit)]

    def _dome(self, costo: np.ndarray, medial: np.ndarray, lift: float, profile, rng) -> np.ndarray:
        """Diaphragm dome from the costophrenic angle to the heart: the straight
        line between them raised by ``lift`` (a fraction of the lung height)
        times ``profile`` at t = 0, 0.2, 0.45, 0.7, 0.88, 1 along it."""
        t = np.array([0.0, 0.2, 0.45, 0.7, 0.88, 1.0])
        bulge = np.asarray(profile) * lift * self.height
        pts = costo + t[:, None] * (medial - costo)
        pts[:, 1] -= bulge
        pts[2:4] += rng.normal(0.0, 0.004 * self.size, (2, 2))
        return _spline(pts)[0]


def _band(line: np.ndarray, thickness: float) -> np.ndarray:
    """Closed outline of a bone of ``thickness`` around centre line ``line``.

    The sternal (first) end is thicker, both ends are rounded.
    """
    centre, _ = _spline(line)
    tangent = np.gradient(centre, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    half = 0.5 * thickness * np.linspace(1.25, 0.85, len(centre))[:, None]
    upper, lower = centre + normal * half, centre - normal * half

    def cap(point, direction, radius, start):
        a = np.linspace(0.0, np.pi, 12)[1:-1]
        ang = np.arctan2(direction[1], direction[0]) + start + a
        return point + radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)

    end_cap = cap(centre[-1], tangent[-1], half[-1, 0], -np.pi / 2)
    start_cap = cap(centre[0], -tangent[0], half[0, 0], -np.pi / 2)
    return np.concatenate([upper, end_cap[::-1], lower[::-1], start_cap[::-1]])


# ---------------------------------------------------------------------------
# Rendering: attenuation of the upright patient, mapped to film intensity.


def _render(a: _Anatomy, rng: np.random.Generator, size: int) -> np.ndarray:
    """Attenuation-like image of the upright patient (larger = brighter).

    Roughly: soft tissue about 1 along the midline, the lungs about 0.45
    less, bone a little more; ``_expose`` turns this into film intensity.
    """
    s = size / 512.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    masks = {name: _rasterize(poly, size).astype(np.float32) for name, poly in a.outlines.items()}
    lungs = masks["right_lung"] + masks["left_lung"]
    yn = (ys - a.top) / a.height  # 0 at the apices, 1 at the costophrenic angles

    # Soft tissue: elliptic cross-section of the trunk, shoulders flaring at the top.
    width = a.body_half_width * (1.0 + 0.35 * np.exp(-((yn / 0.12) ** 2)))
    body = np.sqrt(np.clip(1.0 - ((xs - a.cx) / width) ** 2, 0.0, 1.0))
    body = 0.25 + 0.75 * _smooth_coarse(body, 6 * s)
    # The abdomen below the diaphragm is thicker than the chest.
    body += 0.1 * _sigmoid((yn - 0.93) / 0.05) * body

    # Air in the lungs: a sharp step at the border, deepest inside; less at
    # the apices (shoulder soft tissue) and bases (breasts, dome curvature).
    field = _smooth(lungs, 1.0 * s)
    depth = _smooth_coarse(lungs, 0.035 * size)
    overlap = 1.0 - 0.25 * np.exp(-yn / 0.07) - 0.3 * _sigmoid((yn - 0.75) / 0.08)
    air = (0.09 * field + 0.38 * depth) * overlap * a.air
    # Lung parenchyma: fine mottled texture.
    air *= 1.0 + 0.014 * _texture(rng, size, 2.0 * s)
    # Air in the trachea, down to the carina.
    trachea = _sigmoid((0.015 * size - np.abs(xs - a.cx - 0.006 * size)) / (0.003 * size))
    trachea *= _sigmoid((a.carina_y - ys) / (0.008 * size)) * (1.0 - lungs)
    # Gas in the stomach under the left dome.
    bx, by, radius, gas = a.bubble
    bubble = np.exp(-(((xs - bx) / radius) ** 2 + ((ys - by) / (0.6 * radius)) ** 2) ** 2)

    # Ribs show clearly only against the dark lungs; elsewhere the dense
    # soft tissue swamps them.
    visible = 0.3 + 0.7 * depth / max(float(depth.max()), 1e-6)
    clavicles = _smooth(masks["left_clavicle"] + masks["right_clavicle"], 1.0 * s)
    bone = 0.06 * _spine(a, size) + 0.055 * _ribs(a, size) * visible
    bone += 0.1 * clavicles * (0.5 + 0.5 * visible)
    hila = sum(
        np.exp(-((xs - h[0, 0]) ** 2 + (ys - h[0, 1]) ** 2) / (0.045 * size) ** 2) for h in a.hila.values()
    )
    vessels = (0.35 * _vessels(a, rng, size) + 0.07 * hila) * _smooth(lungs, 3 * s)
    heart = _smooth(masks["heart"], 1.5 * s)

    atten = body - air - 0.08 * trachea - gas * bubble + 0.03 * heart + bone + vessels
    # Gentle large-scale unevenness of patient and detector.
    atten += 0.015 * _upsample(_texture(rng, size // 4, 0.03 * size / 4), size)
    return atten.astype(np.float32)


def _spine(a: _Anatomy, size: int) -> np.ndarray:
    """Vertebral column: stacked vertebral bodies with discs, pedicles and spinous processes."""
    out = np.zeros((size, size), np.float32)
    c0 = int(max(0, np.floor(a.spine_x - 2 * a.spine_half_width)))
    c1 = int(min(size, np.ceil(a.spine_x + 2 * a.spine_half_width)))
    ys, xs = np.mgrid[0:size, c0:c1].astype(np.float32)
    u = (xs - a.spine_x) / a.spine_half_width
    # Vertebrae get taller towards the bottom.
    yn = (ys - a.top) / a.height
    pitch = 0.05 + 0.025 * np.clip(yn, 0.0, 1.2)
    phase = np.mod(yn / pitch, 1.0)
    column = _sigmoid((1.0 - np.abs(u)) * 8.0)
    disc = 1.0 - 0.4 * np.exp(-(((phase - 0.5) / 0.07) ** 2))
    pedicle = np.exp(-(((np.abs(u) - 0.68) / 0.14) ** 2 + ((phase - 0.22) / 0.1) ** 2))
    process = np.exp(-((u / 0.1) ** 2 + ((phase - 0.3) / 0.18) ** 2))
    out[:, c0:c1] = column * disc + 0.6 * pedicle + 0.4 * process
    return out


def _ribs(a: _Anatomy, size: int) -> np.ndarray:
    """Ribs: posterior ribs arch from the spine and bend down along the chest
    wall; fainter anterior ribs run back down and medially."""
    out = np.zeros((size, size), np.float32)
    h = a.height
    c1, c2, c3 = a.rib_shape
    cols_all = np.arange(size, dtype=np.float32)
    for side, sign in (("right", -1.0), ("left", 1.0)):
        u_all = sign * (cols_all - a.cx) / a.half_width[side]  # 0 at the midline, 1 at the chest wall
        keep = (u_all > 0.05) & (u_all < 1.1)
        cols, u = cols_all[keep].astype(int), u_all[keep]
        for k in range(11):
            jitter = a.rib_jitter[int(side == "left"), k]
            y0 = a.top + h * (a.rib_phase + jitter - 0.03 + 0.97 * (k / 10.0) ** 1.1)
            t = (0.012 + 0.0008 * k) * h  # half thickness
            # Upper ribs arch more steeply.
            arch = 1.0 + 0.8 * np.exp(-k / 2.5)
            bend = -0.1 * c1 * u + 0.2 * c2 * u**2 + 0.5 * c3 * np.clip(u - 0.85, 0.0, None) ** 2
            post = y0 + h * arch * bend
            ant = y0 + h * (0.08 + 0.22 * (1.0 - u) * c1)
            lateral_end = 1.0 + 0.04 * min(k, 3)
            for centre, strength, thick, fade in (
                (post, 1.0, t, _sigmoid((u - 0.12) / 0.03) * _sigmoid((lateral_end - u) / 0.02)),
                (ant, 0.6, 0.9 * t, _sigmoid((u - 0.35) / 0.04) * _sigmoid((0.97 - u) / 0.03)),
            ):
                r0 = int(max(0, np.floor(centre.min() - 2 * thick)))
                r1 = int(min(size, np.ceil(centre.max() + 2 * thick)))
                if r1 <= r0:
                    continue
                rows = np.arange(r0, r1, dtype=np.float32)[:, None]
                d = np.abs(rows - centre[None, :]) / thick
                # Solid band, brighter towards its cortical rim.
                band = _sigmoid((1.0 - d) * 6.0) * (1.0 + 0.5 * d * d)
                out[r0:r1, cols] += strength * band * fade
    return out


def _vessels(a: _Anatomy, rng: np.random.Generator, size: int) -> np.ndarray:
    """Pulmonary vessel markings: random walks branching out from each hilum,
    each generation thinner, fainter and shorter than its parent."""
    starts, angles = [], []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        starts.append(a.hila[side][0] + rng.normal(0.0, 0.015 * size, (10, 2)))
        angles.append((np.pi if sign < 0 else 0.0) + rng.uniform(-1.4, 1.4, 10))
    start, angle = np.concatenate(starts), np.concatenate(angles)
    length = size * rng.uniform(0.08, 0.14, len(start))
    s = size / 512.0
    out = np.zeros((size, size), np.float32)
    thick = np.zeros(size * size)
    thin = np.zeros(size * size)
    for gen in range(5):
        n = int(length.max()) + 1
        theta = angle[:, None] + np.cumsum(rng.normal(0.0, 0.05, (len(start), n)), axis=1)
        path = start[:, None, :] + np.cumsum(np.stack([np.cos(theta), np.sin(theta)], axis=2), axis=1)
        drawn = np.arange(n)[None, :] < length[:, None]
        ix, iy = np.round(path[..., 0]).astype(int), np.round(path[..., 1]).astype(int)
        ok = drawn & (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        target = thick if gen < 2 else thin
        target += np.bincount(iy[ok] * size + ix[ok], minlength=size * size) * 0.6**gen
        # Two children per branch, leaving from its outer half.
        parent = np.repeat(np.arange(len(start)), 2)
        at = (length[parent] * rng.uniform(0.5, 1.0, len(parent))).astype(int)
        start = path[parent, at]
        turn = rng.choice([-1.0, 1.0], len(parent)) * rng.uniform(0.2, 0.7, len(parent))
        angle = theta[parent, at] + turn
        length = length[parent] * rng.uniform(0.6, 0.9, len(parent))
    for acc, sigma in ((thick, 2.0 * s), (thin, 1.1 * s)):
        acc = _smooth(acc.reshape(size, size).astype(np.float32), sigma)
        # Saturate where branches pile up at the hilum.
        out += acc / (1.0 + 2.0 * acc)
    return out


def _rotate_image(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the image centre by ``angle`` (the same map as the contours)."""
    c, s = np.cos(angle), np.sin(angle)
    centre = (np.array(image.shape) - 1) / 2.0
    # affine_transform maps output (row, col) to input (row, col): the inverse rotation.
    matrix = np.array([[c, -s], [s, c]])
    offset = centre - matrix @ centre
    return ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="nearest")


def _expose(atten: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Film response with per-patient exposure, then quantum noise and detector blur.

    The exponential response saturates dense regions (abdomen, mediastinum)
    like a real film or processed detector image; ``mu`` and the gamma set the
    patient's exposure and contrast.
    """
    mu = rng.uniform(1.3, 2.0)
    film = (1.0 - np.exp(-mu * atten)) / (1.0 - np.exp(-mu * rng.uniform(1.1, 1.3)))
    film = np.clip(film, 0.0, 1.0) ** rng.uniform(1.1, 1.6)
    film += rng.normal(0.0, rng.uniform(0.006, 0.015), film.shape)
    film = ndimage.gaussian_filter(film, rng.uniform(0.5, 0.9) * size / 512.0)
    return np.clip(film, 0.0, 1.0).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma, truncate=3.0) if sigma > 0.3 else image


def _smooth_coarse(image: np.ndarray, sigma: float) -> np.ndarray:
    """Wide Gaussian blur computed at a quarter of the resolution (for speed)."""
    size = image.shape[0]
    n = size // 4
    small = image[: 4 * n, : 4 * n].reshape(n, 4, n, 4).mean(axis=(1, 3))
    return _upsample(ndimage.gaussian_filter(small, sigma / 4, mode="nearest"), size)


def _upsample(small: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square image to ``size`` x ``size``."""
    zoomed = ndimage.zoom(small, size / small.shape[0], order=1, mode="nearest", grid_mode=True)
    return zoomed[:size, :size]


def _texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` pixels, rescaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), sigma)
    # A Gaussian blur of white noise has standard deviation 1 / (2 sqrt(pi) sigma).
    return noise * (2.0 * np.sqrt(np.pi) * sigma)

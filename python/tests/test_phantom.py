"""Tests for the procedural chest-radiograph phantom (ace.data.phantom)."""


import numpy as np
import pytest
from scipy import ndimage

from ace.data import phantom

LUNGS_AND_HEART = ("right_lung", "left_lung", "heart")


@pytest.fixture(scope="module")
def cohort():
    """20 patients at 256 px: enough to measure variation, fast to draw."""
    return phantom.batch(range(20), size=256)[1]


@pytest.fixture(scope="module")
def full_size():
    return [phantom.generate(seed) for seed in (0, 7, 123)]


def boundary_points(mask):
    """x, y centres of the pixels on either side of the mask's edge."""
    edge = (mask & ~ndimage.binary_erosion(mask)) | (ndimage.binary_dilation(mask) & ~mask)
    return np.argwhere(edge)[:, ::-1].astype(np.float64)


def test_same_seed_gives_the_same_phantom():
    a, b = phantom.generate(5, size=128), phantom.generate(5, size=128)
    assert np.array_equal(a.image, b.image)
    for name in phantom.STRUCTURES:
        assert np.array_equal(a.masks[name], b.masks[name])
    for name in LUNGS_AND_HEART:
        assert np.array_equal(a.landmarks[name], b.landmarks[name])


def test_different_seeds_give_different_phantoms():
    a, b = phantom.generate(1, size=128), phantom.generate(2, size=128)
    assert np.abs(a.image - b.image).mean() > 0.01
    assert not np.array_equal(a.masks["right_lung"], b.masks["right_lung"])
    assert np.abs(a.landmarks["heart"] - b.landmarks["heart"]).max() > 1.0


def test_types_shapes_and_ranges(full_size):
    for p in full_size:
        assert p.image.shape == (512, 512) and p.image.dtype == np.float32
        assert 0.0 <= p.image.min() and p.image.max() <= 1.0
        assert set(p.masks) == set(phantom.STRUCTURES)
        for mask in p.masks.values():
            assert mask.shape == (512, 512) and mask.dtype == bool
        for name, count in phantom.LANDMARK_COUNTS.items():
            assert p.landmarks[name].shape == (count, 2)
            assert p.landmarks[name].dtype == np.float32


@pytest.mark.parametrize("size", [64, 224])
def test_other_sizes_scale_the_anatomy(size):
    p = phantom.generate(3, size=size)
    assert p.image.shape == (size, size)
    lung_fraction = p.masks["right_lung"].mean()
    assert 0.08 < lung_fraction < 0.3
    points = phantom.landmark_array([p])[0]
    assert points.min() >= 0 and points.max() <= size - 1


def test_landmarks_lie_on_their_mask_boundary(full_size, cohort):
    for p in full_size + cohort[:5]:
        for name in LUNGS_AND_HEART:
            mask, points = p.masks[name], p.landmarks[name].astype(np.float64)
            edge = boundary_points(mask)
            distance = np.sqrt(((points[:, None, :] - edge[None, :, :]) ** 2).sum(-1)).min(axis=1)
            assert distance.max() <= 1.5, (p.seed, name, distance.max())
            # ... and on the structure, not beside it: inside the mask grown by
            # 2.5 px (the tip of a sharp costophrenic angle is thinner than a
            # pixel, so its last pixel centre can be 2 px from the tip).
            inside = np.argwhere(mask)[:, ::-1].astype(np.float64)
            to_mask = np.sqrt(((points[:, None, :] - inside[None, :, :]) ** 2).sum(-1)).min(axis=1)
            assert to_mask.max() <= 2.5, (p.seed, name, to_mask.max())


def test_landmarks_are_ordered_along_the_contour(full_size):
    # Consecutive points are neighbours on the contour: no jumps across the shape.
    for p in full_size:
        for name in LUNGS_AND_HEART:
            points = p.landmarks[name]
            steps = np.linalg.norm(np.diff(np.vstack([points, points[:1]]), axis=0), axis=1)
            perimeter = steps.sum()
            assert steps.max() < 0.15 * perimeter, (p.seed, name)


def test_anatomical_key_points(cohort):
    for p in cohort:
        right, left, heart = (p.landmarks[n] for n in LUNGS_AND_HEART)
        # Point 0 is the apex, 21 the costophrenic angle (lowest lateral point).
        assert right[0, 1] < right[10, 1] < right[21, 1]
        assert left[0, 1] < left[10, 1] < left[21, 1]
        # The right lung's cardiophrenic point (29) is the heart's point 0;
        # the left lung's point 27 is the cardiac apex, the heart's point 18.
        assert np.linalg.norm(right[29] - heart[0]) < 1.0
        assert np.linalg.norm(left[27] - heart[18]) < 1.0


def test_patient_right_is_on_the_image_left(cohort):
    for p in cohort:
        right_x = np.argwhere(p.masks["right_lung"])[:, 1].mean()
        left_x = np.argwhere(p.masks["left_lung"])[:, 1].mean()
        assert right_x < 128 < left_x
        assert np.argwhere(p.masks["right_clavicle"])[:, 1].mean() < 128
        assert p.landmarks["right_lung"][:, 0].mean() < p.landmarks["left_lung"][:, 0].mean()


def test_landmarks_vary_between_patients(cohort):
    points = phantom.landmark_array(cohort) * (512 / 256)  # in 512-pixel units
    assert points.std(axis=0).mean() > 3.0


def test_anatomy_stays_plausible(cohort):
    # Bounds around the SCR masks of the real JSRT images (lungs 9-23 %, heart
    # 7-13 %, clavicles about 1 % of the image).
    for p in cohort:
        fraction = {name: mask.mean() for name, mask in p.masks.items()}
        assert 0.08 < fraction["right_lung"] < 0.3, (p.seed, fraction)
        assert 0.08 < fraction["left_lung"] < 0.3, (p.seed, fraction)
        assert 0.04 < fraction["heart"] < 0.16, (p.seed, fraction)
        for side in ("left", "right"):
            assert 0.002 < fraction[f"{side}_clavicle"] < 0.03, (p.seed, fraction)
        # As in SCR, the lung fields exclude the heart.
        assert not (p.masks["heart"] & (p.masks["left_lung"] | p.masks["right_lung"])).any()
        # Clavicle masks cover only the part over their lung field.
        assert not (p.masks["right_clavicle"] & ~p.masks["right_lung"]).any()


def test_lungs_are_darker_than_the_heart(cohort, full_size):
    for p in cohort + full_size:
        lungs = p.masks["left_lung"] | p.masks["right_lung"]
        assert p.image[lungs].mean() + 0.1 < p.image[p.masks["heart"]].mean()


def test_image_edges_sit_on_the_mask_boundaries(cohort):
    # The drawn lungs and their masks share one rotation: the dark-to-bright
    # step is strongest exactly at the mask edge, not a few pixels off.
    def step(image, mask):
        outside = ndimage.binary_dilation(mask, iterations=2) & ~mask
        inside = mask & ~ndimage.binary_erosion(mask, iterations=2)
        return image[outside].mean() - image[inside].mean()

    for p in cohort:
        lungs = p.masks["left_lung"] | p.masks["right_lung"]
        shifted = [step(p.image, np.roll(lungs, k, axis=a)) for a in (0, 1) for k in (-3, 3)]
        assert step(p.image, lungs) > max(shifted), p.seed


def test_batch_and_landmark_array(cohort):
    images, phantoms = phantom.batch([4, 9], size=96)
    assert images.shape == (2, 96, 96) and images.dtype == np.float32
    assert np.array_equal(images[1], phantom.generate(9, size=96).image)
    points = phantom.landmark_array(cohort[:3])
    assert points.shape == (3, 120, 2) and points.dtype == np.float32
    # JSRT/HybridGNet layout: right lung 0-43, left lung 44-93, heart 94-119.
    assert np.array_equal(points[1, :44], cohort[1].landmarks["right_lung"])
    assert np.array_equal(points[1, 44:94], cohort[1].landmarks["left_lung"])
    assert np.array_equal(points[1, 94:], cohort[1].landmarks["heart"])
    assert phantom.landmark_array(cohort[:2], order=("heart",)).shape == (2, 26, 2)
    with pytest.raises(ValueError, match="clavicle"):
        phantom.landmark_array(cohort[:1], order=("clavicle",))

"""The colour fundus phantom (exact landmarks, mirrored eyes, pairs with a known transform)
and the FIRE-style pair correspondence probe."""
import numpy as np
import pytest

import ace
from ace import probes
from ace.data import fundus


@pytest.fixture(scope="module")
def eye():
    return fundus.generate(3, 256, eye="right")


def test_landmarks_sit_on_their_anatomy(eye):
    image, size = eye.image, 256
    brightness = image.mean(-1)
    x, y = np.rint(eye.disc).astype(int)
    assert brightness[y, x] > np.percentile(brightness[eye.fov], 99)          # the disc is the brightest
    fx, fy = np.rint(eye.fovea).astype(int)
    r = size // 10
    macula = image[fy - r:fy + r + 1, fx - r:fx + r + 1, 1]
    dy, dx = np.unravel_index(np.argmin(ndimage_smooth(macula)), macula.shape)
    assert abs(dx - r) <= 2 and abs(dy - r) <= 2                              # the fovea is the darkest
    assert len(eye.bifurcations) >= 8
    for bx, by in np.rint(eye.bifurcations).astype(int):                      # forks lie on vessels
        window = image[max(by - 6, 0):by + 7, max(bx - 6, 0):bx + 7, 0]
        assert image[by, bx, 0] < np.median(window) - 0.03


def ndimage_smooth(a):
    from scipy import ndimage
    return ndimage.gaussian_filter(a, 1.0)


def test_left_eye_is_the_mirror_of_the_right():
    right, left = fundus.generate(7, 128, eye="right"), fundus.generate(7, 128, eye="left")
    assert np.array_equal(left.image, right.image[:, ::-1])
    np.testing.assert_allclose(left.landmarks[:, 0], 127 - right.landmarks[:, 0])
    np.testing.assert_allclose(left.landmarks[:, 1], right.landmarks[:, 1])
    assert right.disc[0] > right.fovea[0] and left.disc[0] < left.fovea[0]   # the disc is nasal


def test_eyes_vary():
    a, b = fundus.generate(1, 128, eye="right"), fundus.generate(2, 128, eye="right")
    assert np.linalg.norm(a.disc - b.disc) > 1 and not np.allclose(a.image, b.image)
    images, eyes = fundus.batch(range(4), 64)
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1


def test_pair_transform_maps_view_one_onto_view_two():
    p = fundus.pair(5, 128)
    assert len(p.points_first) >= 3
    mapped = p.points_first @ p.matrix[:2, :2].T + p.matrix[:2, 2]
    np.testing.assert_allclose(mapped, p.points_second, atol=1e-9)
    # Pull view 2 back onto view 1's pixels with the matrix: inside both views it agrees
    # with view 1; assuming no transform (the identity) it does not.
    from ace.data.fundus import _warp
    back = _warp(p.second, p.matrix, 128)
    identity = p.second
    overlap = (back.sum(-1) > 0.05) & (p.first.sum(-1) > 0.05)
    overlap[:4], overlap[-4:], overlap[:, :4], overlap[:, -4:] = False, False, False, False
    good = np.abs(back - p.first)[overlap].mean()
    bad = np.abs(identity - p.first)[overlap].mean()
    assert overlap.mean() > 0.3
    assert good < 0.03 and bad > 2 * good


class RawPixels:
    """An 'encoder' whose embedding of a window is its pixels, 4x subsampled: nearest windows
    are the same pixels, so a translated pair must be matched exactly."""
    default_features = "mean"

    def embed(self, images, batch_size=None):
        x = np.asarray(images, np.float32)[:, ::4, ::4]
        flat = x.reshape(len(x), -1)
        return flat, flat[:, None, None, :]


def test_pair_correspondence_finds_a_translation_exactly():
    big = fundus.generate(11, 256, eye="left").image
    query, key = big[0:128, 0:128], big[8:136, 16:144]          # key = query moved by (-16, -8)
    stride, patch = 8, 64
    centres = np.arange(0, 128, stride) - patch // 2 + (patch - 1) / 2
    key_points = np.stack(np.meshgrid(centres[4:12:2], centres[4:12:2]), -1).reshape(-1, 2)
    query_points = key_points + [16, 8]
    r = probes.pair_correspondence(RawPixels(), [query], [key], [query_points], [key_points],
                                   patch=patch, stride=stride)
    assert r["mean_error"] == 0 and r["auc"] == 1.0
    assert r["identity_error"] == pytest.approx(np.hypot(16, 8))
    assert r["points"] == len(key_points) and r["pairs"] == 1


def test_pair_correspondence_with_an_encoder_on_phantom_pairs():
    pairs = [fundus.pair(s, 128) for s in (1, 2)]
    enc = ace.Encoder("vit_nano", in_chans=3)
    r = probes.pair_correspondence(enc, [p.first for p in pairs], [p.second for p in pairs],
                                   [p.points_first for p in pairs], [p.points_second for p in pairs],
                                   patch=48, stride=16)
    assert r["pairs"] == 2 and r["points"] == sum(len(p.points_first) for p in pairs)
    assert np.isfinite(r["mean_error"]) and 0 <= r["auc"] <= 1 and r["features"] == "cls"
    assert list(r["success"]) == list(range(1, 26))
    lo, hi = r["ci95"]
    assert lo <= r["mean_error"] <= hi


def test_pair_correspondence_refuses_bad_input():
    p = fundus.pair(1, 64)
    with pytest.raises(ace.ACEError, match="as many"):
        probes.pair_correspondence(RawPixels(), [p.first], [], [p.points_first], [p.points_second])
    with pytest.raises(ace.ACEError, match=r"\(M, 2\)"):
        probes.pair_correspondence(RawPixels(), [p.first], [p.second], [p.points_first[:, :1]], [p.points_second])
    with pytest.raises(ace.ACEError, match="finite"):
        bad = p.points_first.copy()
        bad[0, 0] = np.nan
        probes.pair_correspondence(RawPixels(), [p.first], [p.second], [bad], [p.points_second])

"""Key-point detection (ace.probes.keypoints): the heat-map coordinates, the decoder on synthetic
heat maps, and fine-tuning through the core on phantoms against the mean-position reference."""
import csv

import numpy as np
import pytest
from scipy import ndimage

import ace
from ace import probes
from ace.data import phantom
from ace.data.datasets import KEYPOINTS, LANDMARK_OFFSETS, keypoint_ids

from conftest import JSRT, needs_jsrt


def test_decoders_return_exact_coordinates():
    # A one-hot map: pixel (row 2, column 5) of an 8 x 8 map over a 32 x 32 image is centred at
    # x = (5 + 0.5) * 4 - 0.5 = 21.5, y = (2 + 0.5) * 4 - 0.5 = 9.5.
    logits = np.full((8, 8), -50.0)
    logits[2, 5] = 50.0
    np.testing.assert_allclose(probes.decode_heatmaps(logits, (32, 32), "argmax"), [21.5, 9.5])
    np.testing.assert_allclose(probes.decode_heatmaps(logits, (32, 32)), [21.5, 9.5], atol=1e-12)
    # A Gaussian log-heat-map centred between pixels: soft-argmax returns its centre exactly
    # (the softmax is the normalized Gaussian), argmax the nearest pixel's centre.
    points = np.array([[[20.3, 27.8], [41.0, 22.6]]])            # x, y on 64 x 48 images, 6 sigma inside
    maps = probes.gaussian_heatmaps(points, (48, 64), (24, 32), sigma=1.5)
    assert maps.shape == (1, 2, 24, 32)
    np.testing.assert_allclose(maps.sum(axis=(-2, -1)), 1.0)
    np.testing.assert_allclose(probes.decode_heatmaps(np.log(maps), (48, 64)), points, atol=1e-9)
    argmax = probes.decode_heatmaps(np.log(maps), (48, 64), "argmax")
    np.testing.assert_allclose(argmax, [[[20.5, 28.5], [40.5, 22.5]]])
    # A missing point has a NaN target (no loss).
    assert np.isnan(probes.gaussian_heatmaps(np.array([[np.nan, np.nan]]), (8, 8), (4, 4), 1.0)).all()
    with pytest.raises(ValueError, match="method"):
        probes.decode_heatmaps(logits, (32, 32), "mean")


def test_jsrt_keypoints_are_seven_distinct_landmarks():
    ids = keypoint_ids()
    assert len(KEYPOINTS) == 7 and len(set(ids.tolist())) == 7 and ids.max() < 120
    # On a phantom the key points run down the chest in anatomical order.
    lm = phantom.landmark_array([phantom.generate(0, 256)])[0]
    y = dict(zip(KEYPOINTS, lm[ids, 1]))
    assert y["right costophrenic angle"] > y["right cardiophrenic angle"] > y["aortic knob"] > y["left apex"]
    assert y["left costophrenic angle"] > y["cardiac apex"] > y["aortic knob"]


@needs_jsrt
def test_jsrt_keypoints_sit_where_their_names_say():
    """On the mean JSRT landmark shape: each apex is its lung's top point, each costophrenic angle
    its lowest, the cardiophrenic angle and the cardiac apex the heart's lower corners."""
    rows = {}
    with open(JSRT / "landmarks_dev.csv") as f:
        for row in csv.DictReader(f):
            rows.setdefault(LANDMARK_OFFSETS[row["structure"]] + int(row["index"]), []).append(
                (float(row["x"]), float(row["y"])))
    mean = np.array([np.mean(rows[i], axis=0) for i in range(120)])
    at = dict(zip(KEYPOINTS, mean[keypoint_ids()]))
    right, left, heart = mean[:44], mean[44:94], mean[94:]
    assert at["right apex"][1] < right[:, 1].min() + 2 and at["left apex"][1] < left[:, 1].min() + 2
    assert at["right costophrenic angle"][1] == right[:, 1].max()
    assert at["left costophrenic angle"][1] == left[:, 1].max()
    assert np.linalg.norm(at["right cardiophrenic angle"] - heart[0]) < 10
    assert np.linalg.norm(at["cardiac apex"] - heart[heart.sum(axis=1).argmax()]) < 10   # lower-lateral corner
    assert left[:, 0].min() < at["aortic knob"][0] < at["cardiac apex"][0]


def shifted_phantoms(n, size, shift, seed=0):
    """Phantoms moved by up to `shift` pixels in x and y, with their landmarks: the anatomy must be
    found in each image, its mean position is a poor prediction."""
    images, cohort = phantom.batch(range(n), size=size)
    landmarks = phantom.landmark_array(cohort).astype(np.float64)
    d = np.random.default_rng(seed).uniform(-shift, shift, size=(n, 2))
    images = np.stack([ndimage.shift(im, (dy, dx), order=1) for im, (dx, dy) in zip(images, d)])
    return images, landmarks + d[:, None, :]


def test_keypoints_finetuned_on_phantoms_beat_the_mean_position():
    """64 px phantoms moved by up to 10 px: fine-tuning a vit_nano with the heat-map head through the
    core's backward brings the error far below predicting every key point at its mean position."""
    images, landmarks = shifted_phantoms(48, 64, 10)
    enc = ace.Encoder("vit_nano", img_size=64, seed=0)
    before = enc.state_dict()
    r = probes.keypoints(enc, (images[:40], landmarks[:40]), (images[40:], landmarks[40:]), points=keypoint_ids(),
                         finetune=dict(epochs=60, batch=8, lr=1e-3, head_lr=1e-2))
    assert r["errors"].shape == (8, 7) and r["predicted"].shape == (8, 7, 2) and len(r["per_point"]) == 7
    assert r["mean_error"] < 0.5 * r["mean_position_error"], (r["mean_error"], r["mean_position_error"])
    assert r["ci95"][0] <= r["mean_error"] <= r["ci95"][1] and r["ci95"][1] < r["mean_position_ci95"][0]
    assert r["shots"] == 40 and r["output_stride"] == 4 and r["n_test"] == 8
    assert all(np.array_equal(v, enc.state_dict()[k]) for k, v in before.items())


def test_keypoints_few_shot_missing_points_and_bad_input():
    images, landmarks = shifted_phantoms(10, 32, 2)
    landmarks[1] = np.nan                     # an image without landmarks is left out
    landmarks[8, 0] = np.nan                  # a missing test point has no error
    enc = ace.Encoder("vit_nano", img_size=32, seed=0)
    train, test = (images[:6], landmarks[:6]), (images[6:], landmarks[6:])
    r = probes.keypoints(enc, train, test, points=[0, 44, 65], shots=2, output_stride=8,
                         finetune=dict(epochs=2), decode="argmax")
    assert r["shots"] == 2 and r["output_stride"] == 8 and r["points"] == [0, 44, 65]
    assert np.isnan(r["errors"][2, 0]) and np.isfinite(r["errors"][:2]).all() and np.isfinite(r["mean_error"])
    with pytest.raises(ValueError, match="shots"):
        probes.keypoints(enc, train, test, points=[0], shots=6)        # 5 training images have landmarks
    with pytest.raises(ValueError, match="output_stride must divide"):
        probes.keypoints(enc, train, test, points=[0], output_stride=3)
    with pytest.raises(ValueError, match="points must be distinct"):
        probes.keypoints(enc, train, test, points=[0, 0])
    with pytest.raises(ValueError, match="unknown finetune setting"):
        probes.keypoints(enc, train, test, points=[0], finetune=dict(steps=1))

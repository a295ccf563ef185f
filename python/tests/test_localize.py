"""Weakly supervised localization: Grad-CAM (ace.probes.gradcam) on constructed models with known
answers, the pointing game and IoU by hand, a classifier fine-tuned through the core on phantoms
with a lesion of known position, and `ace localize` end to end."""
import json

import numpy as np
import pytest

import ace
from ace import finetune, probes
from ace.data import lesion_phantoms, load_jsrt_nodules
from ace.probes import gradcam

from conftest import JSRT, needs_jsrt, run_ace


class RegionScore:
    """Two class scores: 0, and sum over the tokens of one region of (t . v)^2 (a model whose
    score depends on that region only), with its exact backward."""

    def __init__(self, region, v):
        self.region, self.v = region, v

    def forward(self, tokens):
        self._tokens = tokens
        proj = tokens[:, self.region[0], self.region[1]] @ self.v
        return np.stack([np.zeros(len(tokens)), (proj ** 2).sum(axis=(1, 2))], axis=1)

    def backward(self, d_scores):
        d = np.zeros_like(self._tokens)
        proj = self._tokens[:, self.region[0], self.region[1]] @ self.v
        d[:, self.region[0], self.region[1]] = (2 * proj * d_scores[:, 1, None, None])[..., None] * self.v
        return d


def test_grad_cam_peaks_on_the_region_the_score_depends_on():
    """Tokens of an 8 x 8 grid: small noise, and two patches whose tokens point along v1 and v2.
    A score that reads only the first patch gives a map that peaks there, one that reads only the
    second peaks on the second: the gradient, not the content, chooses."""
    rng = np.random.default_rng(0)
    v1, v2 = np.eye(16)[0], np.eye(16)[1]
    tokens = 0.05 * rng.normal(size=(1, 8, 8, 16))
    tokens[0, 1:3, 1:3] += v1
    tokens[0, 5:7, 4:7] += v2
    for region, v, inside in (((slice(1, 3), slice(1, 3)), v1, (1, 2)),
                              ((slice(5, 7), slice(4, 7)), v2, (5, 4))):
        cam = gradcam.grad_cam(tokens, RegionScore(region, v), 1)[0]
        row, col = np.unravel_index(cam.argmax(), cam.shape)
        assert region[0].start <= row < region[0].stop and region[1].start <= col < region[1].stop
        outside = np.ones_like(cam, bool)
        outside[region] = False
        assert cam[outside].max() < 0.2 * cam.max()
        # Upsampled to 64 x 64 pixels (8 px tokens), the peak stays on the region's pixels.
        up = gradcam.upsample(cam[None], (64, 64))[0]
        y, x = np.unravel_index(up.argmax(), up.shape)
        assert 8 * region[0].start <= y < 8 * region[0].stop and 8 * region[1].start <= x < 8 * region[1].stop
        assert up.max() == 1.0


def test_grad_cam_of_a_pooled_linear_head_is_the_class_activation_map():
    """For a linear head on the mean token, the gradient is (w_c - w_other) / (h w) at every token,
    so Grad-CAM is ReLU(tokens . (w_c - w_other)) / (h w): CAM, in closed form."""
    rng = np.random.default_rng(1)
    head = finetune.PooledLinear(6, 2)
    head.params["w"][:] = rng.normal(size=(6, 2))
    tokens = rng.normal(size=(3, 4, 5, 6))
    expected = np.maximum(tokens @ (head.params["w"][:, 1] - head.params["w"][:, 0]), 0) / 20
    np.testing.assert_allclose(gradcam.grad_cam(tokens, head, 1), expected, rtol=1e-12)
    # With three classes the score is the log-odds: its gradient weights the others by softmax.
    head3 = finetune.PooledLinear(6, 3)
    head3.params["w"][:] = rng.normal(size=(6, 3))
    scores = head3.forward(tokens)
    p = np.exp(scores[:, [0, 2]]) / np.exp(scores[:, [0, 2]]).sum(axis=1, keepdims=True)
    w = head3.params["w"]
    direction = w[:, 1][None] - p[:, :1] * w[:, 0][None] - p[:, 1:] * w[:, 2][None]
    np.testing.assert_allclose(gradcam.grad_cam(tokens, head3, 1),
                               np.maximum(np.einsum("bijc,bc->bij", tokens, direction), 0) / 20, rtol=1e-10)


def test_pointing_game_and_iou_by_hand():
    maps = np.zeros((2, 10, 10))
    maps[0, 3, 4] = 1.0                                  # peak at x 4, y 3
    maps[1, 8, 8] = 1.0                                  # peak at x 8, y 8
    maps[1, 2:4, 2:5] = 0.6
    boxes = np.array([[2.0, 2.0, 5.0, 4.0], [2.0, 2.0, 4.0, 3.0]])
    hits, chance = gradcam.pointing_game(maps, boxes)
    assert hits.tolist() == [True, False]
    np.testing.assert_allclose(chance, [12 / 100, 6 / 100])          # 4 x 3 and 3 x 2 pixel centres
    hits, _ = gradcam.pointing_game(maps, boxes, tolerance=np.hypot(4, 5))
    assert hits.tolist() == [True, True]
    # Thresholded at 0.5: map 0 is its peak (1 pixel, inside a 12 pixel box); map 1 is the peak
    # and a 2 x 3 block, which is exactly the box.
    np.testing.assert_allclose(gradcam.box_iou(maps, boxes), [1 / 12, 6 / 7])
    np.testing.assert_allclose(gradcam.boxes_from_points([[5.0, 6.0]], [2.0]), [[3.0, 4.0, 7.0, 8.0]])


def local_encoder(size, seed=0):
    """A ViT with every attention weight at zero: each token sees only its own 8 x 8 patch, and
    stays so under fine-tuning (the gradients of zeroed attention weights are zero). Grad-CAM
    assumes the final tokens are where their evidence is; a from-scratch ViT with global
    attention fine-tuned on 60 images may spread the evidence over every token (its maps then
    point anywhere at 100% accuracy), which is what pretraining is for."""
    config = ace.Encoder("vit_nano", img_size=size).config
    enc = ace.Encoder.from_config(dict(config, patch_size=8), seed=seed)
    enc.load_state_dict({k: v * 0 if ".attn." in k else v for k, v in enc.state_dict().items()})
    enc.precision = "fp32"          # the same numbers on every CPU
    return enc


def test_grad_cam_finds_a_phantom_lesion():
    """96 phantoms at 64 px, every second one with a dark lesion (radius 10 px) at a random place
    in the lungs: a classifier fine-tuned on image labels alone tells them apart, and its Grad-CAM
    peak lies on the lesion far more often than chance (the lesion box's share of the image)."""
    data = lesion_phantoms(96, 64, seed=0)
    train = np.concatenate([data.split["train"], data.split["val"]])
    test = data.split["test"]
    boxes = gradcam.boxes_from_points(data.centres[test], data.radii[test])
    r = probes.localization(local_encoder(64), (data.images[train], data.labels[train]),
                            (data.images[test], data.labels[test]), boxes,
                            finetune=dict(epochs=30, batch=8, lr=1e-3, head_lr=1e-2))
    assert r["accuracy"] >= 0.8 and r["auc"] >= 0.9, (r["accuracy"], r["auc"])
    assert r["chance"] < 0.15 and r["pointing_game"] >= 0.6, (r["pointing_game"], r["chance"])
    assert r["ci95"][0] > 2 * r["chance"] and r["iou"] > 0.1
    assert r["maps"].shape == (len(r["boxed"]), 64, 64) and len(r["boxed"]) == (data.labels[test] == 1).sum()
    with pytest.raises(ValueError, match="boxes must be"):
        probes.localization(local_encoder(64), (data.images[train], data.labels[train]),
                            (data.images[test], data.labels[test]), boxes[:3])


def test_localization_without_boxes_draws_maps_only():
    data = lesion_phantoms(12, 32, seed=1)
    enc = ace.Encoder("vit_nano", img_size=32, seed=0)
    r = probes.localization(enc, (data.images[:8], data.labels[:8]), (data.images[8:], data.labels[8:]),
                            finetune=dict(epochs=1))
    assert r["pointing_game"] is None and r["iou"] is None and r["chance"] is None
    assert r["boxed"].tolist() == [1, 3] and r["maps"].shape == (2, 32, 32)
    assert np.all((r["maps"] >= 0) & (r["maps"] <= 1))
    with pytest.raises(ValueError, match="labels must be class indices"):
        probes.localization(enc, (data.images[:8], np.zeros(8, int)), (data.images[8:], data.labels[8:]))


def test_ace_localize_end_to_end_on_phantoms(tmp_path):
    ckpt = tmp_path / "enc.safetensors"
    ace.Encoder("vit_nano", img_size=64, seed=0).save(ckpt)
    out = tmp_path / "maps"
    r = run_ace("localize", ckpt, "--out", out, "--epochs", "2", "--threads", "2")
    assert "pointing game" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["pointing_game"] <= 1 and 0 < m["chance"] < 1 and m["n_test"] == 20 and m["image_size"] == 64
    names = [row["image"] for row in m["per_image"]]
    data = lesion_phantoms(96, 64)                  # the command's default data: its test lesions are drawn
    assert names == [data.names[i] for i in data.split["test"] if data.labels[i] == 1]
    assert all((out / f"{name}.png").stat().st_size > 0 for name in names)
    with np.load(out / "maps.npz") as f:
        assert f["maps"].shape == (len(names), 64, 64) and list(f["names"]) == names
    bad = run_ace("localize", ckpt, "--out", out, "--data", tmp_path / "nowhere", check=False)
    assert bad.returncode == 1 and "JSRT-layout" in bad.stderr


@needs_jsrt
def test_jsrt_nodule_positions():
    data = load_jsrt_nodules(JSRT, size=64)
    known = np.isfinite(data.centres).all(axis=1)
    assert data.images.shape == (247, 64, 64) and data.labels.sum() == 154
    assert known.sum() == 154 and np.array_equal(known, data.labels == 1)
    assert np.all((data.centres[known] >= 0) & (data.centres[known] < 64)) and np.all(data.radii[known] > 0)

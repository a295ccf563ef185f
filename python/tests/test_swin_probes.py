"""Probes with a Swin encoder: token maps are its final grid, embeddings the mean of its tokens."""
import numpy as np

import ace
from ace import probes
from ace.data import phantom

# Two stages at 64 px, window 4: grids 16 and 8 (both with shifted blocks); final grid 8x8.
SWIN_64 = {"preset": "swin_nano", "embed_dim": 24, "depths": [2, 2], "num_heads": [1, 2], "window_size": 4,
           "patch_size": 4, "in_chans": 1, "img_size": 64, "mlp_ratio": 4, "drop_path": 0}


def test_swin_segmentation_linear_and_finetune():
    """Phantom hearts at 64 px: the linear probe runs on the 8x8 final grid, and end-to-end
    fine-tuning through the core's Swin backward beats the head alone (encoder lr 0)."""
    images, cohort = phantom.batch(range(40), size=64)
    hearts = np.stack([p.masks["heart"] for p in cohort])
    train, test = (images[:32], {"heart": hearts[:32]}), (images[32:], {"heart": hearts[32:]})
    enc = ace.Encoder.from_config(SWIN_64, seed=0)
    enc.precision = "fp32"
    assert enc.token_grid == 8 and enc.default_features == "mean"
    linear = probes.segmentation(enc, train, test)
    assert 0 <= linear["dice"]["heart"] <= 1
    before = enc.state_dict()
    settings = dict(epochs=30, batch=8, head_lr=3e-2)
    frozen = probes.segmentation(enc, train, test, mode="finetune", finetune=dict(settings, lr=0.0))
    tuned = probes.segmentation(enc, train, test, mode="finetune", finetune=dict(settings, lr=1e-3))
    assert tuned["dice"]["heart"] > frozen["dice"]["heart"] + 0.05, (frozen["dice"], tuned["dice"])
    assert all(np.array_equal(v, enc.state_dict()[k]) for k, v in before.items())


def test_every_probe_runs_on_a_swin_encoder():
    images, ph = phantom.batch(range(8), size=64)
    landmarks = phantom.landmark_array(ph)
    enc = ace.Encoder.from_config(SWIN_64, seed=0)
    comp = probes.compositionality(enc, images, parts=2, n=8)
    assert comp["cosines"].shape == (8,) and np.all(np.abs(comp["cosines"]) <= 1 + 1e-9)
    for probe in (probes.decompositionality, probes.retrieval):
        r = probe(enc, images, batch=4, trials=8)
        assert 0 <= r["accuracy"] <= 1 and r["features"] == "mean"
    for method in ("dense", "window"):
        r = probes.landmark_correspondence(enc, images[:3], landmarks[:3], method=method, patch=16, pairs=2)
        assert r["errors"].shape == (2, 120) and np.isfinite(r["errors"]).all()
    emb = probes.landmark_embeddings(enc, images[:4], landmarks[:4, ::10], patch=16)
    assert emb["embeddings"].shape == (48, enc.width)
    sym = probes.symmetry(enc, images[:4], landmarks[:4], [(44, 0), (65, 21)], patch=16)
    assert 0 <= sym["accuracy"] <= 1
    labels = np.array([0, 1] * 4)
    r = probes.linear_probe_classification(enc, (images[:4], labels[:4]), (images[4:], labels[4:]))
    assert 0 <= r["auc"] <= 1

"""`ace evaluate` and the labelled data sets it reads."""
import json
import subprocess
import sys

import numpy as np

from ace.data import load_jsrt, mirror_pairs, phantom_set
from ace.evaluate import headline, per_structure

from conftest import JSRT, needs_jsrt


@needs_jsrt
def test_load_jsrt_layout():
    d = load_jsrt(JSRT, size=128)
    assert d.images.shape == (247, 128, 128) and d.images.dtype == np.float32
    assert {k: len(v) for k, v in d.split.items()} == {"train": 173, "val": 25, "test": 49}
    assert sorted(np.concatenate(list(d.split.values()))) == list(range(247))
    assert d.labels.sum() == 154                                  # JPCLN cases have a nodule
    annotated = ~np.isnan(d.landmarks).all(axis=(1, 2))
    assert annotated.sum() == 124 and d.landmarks.shape == (247, 120, 2)
    # Landmarks (scaled to 128 px) lie on their structures: the heart points inside the
    # heart mask dilated by a pixel or two, for almost every point.
    i = np.nonzero(annotated)[0][0]
    heart = d.landmarks[i, 94:].round().astype(int).clip(0, 127)
    from scipy.ndimage import binary_dilation
    near = binary_dilation(d.masks["heart"][i], iterations=2)
    assert near[heart[:, 1], heart[:, 0]].mean() > 0.9
    # The patient's right lung is on the image's left.
    assert d.landmarks[annotated][:, :44, 0].mean() < 64 < d.landmarks[annotated][:, 44:94, 0].mean()


def test_mirror_pairs_pair_left_with_right_lung():
    d = phantom_set(n=12, size=128)
    pairs = mirror_pairs(d.landmarks, 128, max_distance=6)
    assert len(pairs) >= 5
    mean = np.nanmean(d.landmarks, axis=0)
    for left, right in pairs:
        assert 44 <= left < 94 and right < 44
        assert abs((127 - mean[right, 0]) - mean[left, 0]) <= 6


def test_per_structure_means():
    values = [1.0] * 44 + [2.0] * 50 + [None] * 26
    assert per_structure(values) == {"right_lung": 1.0, "left_lung": 2.0, "heart": None}


def test_evaluate_quick_on_the_phantom(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ace", "evaluate", "--random-init", "vit_nano", "--quick",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("compositionality", "decompositionality", "retrieval", "landmarks_dense", "landmark_embeddings",
                "symmetry", "classification", "segmentation", "segmentation_2shot", "segmentation_10shot",
                "segmentation_finetune"):
        assert key in m, key
    for key in ("decompositionality", "retrieval", "landmark_embeddings", "symmetry"):
        assert 0 <= m[key]["accuracy"] <= 1 and 0 < m[key]["chance"] < 1 and m[key]["trials"] > 0
    assert np.isfinite(list(headline(m).values())).all()
    report = (tmp_path / "report.md").read_text()
    for figure in ("compositionality_kde.png", "tsne.png", "landmark_predictions.png", "landmark_errors.png"):
        assert f"({figure})" in report and (tmp_path / figure).stat().st_size > 0
    assert "| dense |" in report and "| fine-tuned |" in report


def test_evaluate_rejects_a_bad_data_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ace", "evaluate", "--random-init", "vit_nano", "--data",
                        str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 1 and "JSRT-layout" in r.stderr

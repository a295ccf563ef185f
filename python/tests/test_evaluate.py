"""`ace evaluate` and the labelled data sets it reads."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ace.data import load_jsrt, mirror_pairs, phantom_set
from ace.evaluate import _PooledFeatures, dice_summary, format_ci, headline, paired_differences, per_structure

from conftest import JSRT, REPOSITORY, needs_jsrt


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


@pytest.fixture(scope="module")
def quick_phantom_evaluation(tmp_path_factory):
    """`ace evaluate --quick` of a random-init vit_nano on the phantoms, run once for the tests below."""
    out = tmp_path_factory.mktemp("quick_evaluation")
    r = subprocess.run([sys.executable, "-m", "ace", "evaluate", "--random-init", "vit_nano", "--quick",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_evaluate_quick_on_the_phantom(quick_phantom_evaluation):
    out = quick_phantom_evaluation
    m = json.loads((out / "metrics.json").read_text())
    for key in ("compositionality", "decompositionality", "retrieval", "landmarks_dense", "landmarks_template",
                "landmarks_window", "landmarks_window_paper", "landmarks_window_dense", "landmarks_window_template",
                "landmark_embeddings", "symmetry", "symmetry_paper", "classification", "segmentation",
                "segmentation_2shot", "segmentation_10shot", "segmentation_finetune"):
        assert key in m, key
    # A random-init encoder has no method of its own: its default is the CLS token, and every
    # global probe is also measured on the other representation.
    assert m["default_features"] == "cls"
    for key in ("compositionality", "retrieval", "symmetry_paper", "landmarks_window_paper", "classification"):
        assert m[key] == m[f"{key}_cls"] and m[f"{key}_mean"]["features"] == "mean", key
    for key in ("decompositionality", "retrieval", "landmark_embeddings", "symmetry", "symmetry_paper"):
        for f in ("mean", "cls"):
            r = m[f"{key}_{f}"]
            assert 0 <= r["accuracy"] <= 1 and 0 < r["chance"] < 1 and r["trials"] > 0
            assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    # The paper's window is 224 / 64 times the small one; the template matches on the dense probe's pairs.
    assert m["landmarks_window_paper"]["patch"] == 112 and m["landmarks_window"]["patch"] == 32
    assert m["landmarks_template"]["pairs"] == m["landmarks_dense"]["pairs"] == 30
    assert m["landmarks_template"]["identity_error"] == m["landmarks_dense"]["identity_error"]
    assert m["landmarks_window_dense"]["pairs"] == 12 and m["landmarks_window_template"]["pairs"] == 12
    rows = headline(m)
    assert all(np.isfinite(row["value"]) and len(row["ci95"]) == 2 for row in rows.values())
    assert rows["retrieval acc, CLS"]["text"] == format_ci(m["retrieval_cls"]["accuracy"], m["retrieval_cls"]["ci95"])
    report = (out / "report.md").read_text()
    for figure in ("compositionality_kde.png", "tsne.png", "tsne_structures.png", "landmark_predictions.png",
                   "landmark_errors.png", "landmark_window_errors.png"):
        assert f"({figure})" in report and (out / figure).stat().st_size > 0
    assert "| dense tokens | patch tokens |" in report and "| fine-tuned |" in report
    assert "| NCC of a 32 px template (no model) | raw pixels |" in report and "| window 112 px | CLS (default) |" in report
    value = m["retrieval_mean"]
    assert f"| {format_ci(value['accuracy'], value['ci95'])} |" in report
    # The per-trial arrays behind paired comparisons: decisions with their images, landmark errors
    # with their (query, key) pairs, key-point errors per test image.
    arrays = np.load(out / "arrays.npz")
    for key in ("decompositionality", "retrieval_mean", "landmark_embeddings", "symmetry_paper_cls"):
        assert arrays[f"correct_{key}"].mean() == pytest.approx(m[key]["accuracy"])
        assert arrays[f"groups_{key}"].shape == arrays[f"correct_{key}"].shape
    assert arrays["pairs_landmarks_dense"].shape == (30, 2)
    assert np.nanmean(arrays["errors_landmarks_dense"]) == pytest.approx(m["landmarks_dense"]["mean_error"])
    assert np.nanmean(arrays["errors_keypoints"]) == pytest.approx(m["keypoints"]["mean_error"])


def test_compare_notebook_tabulates_evaluations(quick_phantom_evaluation, tmp_path):
    # Two "encoders" that reuse the evaluation above: the notebook only tabulates them.
    evals = tmp_path / "evals"
    for name in ("run_a", "run_d", "random_init"):
        shutil.copytree(quick_phantom_evaluation, evals / name)
    # run_a errs 5 px less on every dense landmark and decides every excision right: its paired
    # differences are known exactly.
    arrays = dict(np.load(quick_phantom_evaluation / "arrays.npz"))
    arrays["errors_landmarks_dense"] = arrays["errors_landmarks_dense"] - 5.0
    arrays["correct_decompositionality"] = np.ones_like(arrays["correct_decompositionality"])
    np.savez(evals / "run_a" / "arrays.npz", **arrays)
    # run_a's training files: its budget row comes from them (the last whole row, not the torn one).
    # run_d trained the global loss alone: a DINO-style baseline, like random init.
    for name, losses in (("run_a", ["global", "comp"]), ("run_d", ["global"])):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"losses": losses, "global_weight": 0.01, "comp_weight": 0.5,
                                                     "teacher_temp": 0.02, "epochs": 3, "steps_per_epoch": 5}))
        (run / "metrics.jsonl").write_text('{"step": 1, "cpu_s": 45.0}\n{"step": 2, "cpu_s": 90.0}\n{"step": 3, "cp')
    r = subprocess.run([sys.executable, str(REPOSITORY / "notebooks" / "compare_pretraining.py"), "--runs",
                        str(tmp_path / "run_a"), str(tmp_path / "run_d"), "--data", "phantom", "--quick", "--reuse",
                        "--eval-root", str(evals), "--results", str(tmp_path / "results"), "--name", "t"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "results" / "t.md").read_text()
    rows = json.loads((tmp_path / "results" / "t.json").read_text())
    assert set(rows) == {"run_a", "run_d", "random init"}
    paired = json.loads((tmp_path / "results" / "t_paired.json").read_text())
    assert set(paired) == {"run_a - run_d", "run_a - random init", "run_a - NCC template (no model)",
                           "run_a - same coordinates (no model)"}
    # Against the references only the landmark errors, on the same pairs.
    template = paired["run_a - NCC template (no model)"]
    assert set(template) == {"landmark error px, dense tokens",
                             "landmark error px, paper window, own representation [window pairs]"}
    assert template["landmark error px, dense tokens"]["value"] == pytest.approx(
        np.nanmean(arrays["errors_landmarks_dense"] - arrays["errors_landmarks_template"]))
    same = paired["run_a - same coordinates (no model)"]["landmark error px, dense tokens"]["value"]
    assert same == pytest.approx(np.nanmean(arrays["errors_landmarks_dense"] - arrays["errors_identity"]))
    m = json.loads((quick_phantom_evaluation / "metrics.json").read_text())
    diffs = paired["run_a - random init"]
    assert diffs["landmark error px, dense tokens"]["ci95"] == pytest.approx([-5.0, -5.0])
    assert diffs["landmark error px, dense tokens"]["better"] is True
    excision = diffs["decomposition acc, own representation"]
    assert excision["value"] == pytest.approx(1 - m["decompositionality"]["accuracy"])
    assert excision["better"] is (m["decompositionality"]["ci95"][1] < 1)
    assert diffs["retrieval acc, own representation"] == {"value": 0.0, "ci95": [0.0, 0.0], "better": None,
                                                         "text": "+0.000 [0.000, 0.000]"}
    assert "| run_a - random init | **-5.0 [-5.0, -5.0]** |" in table
    m = json.loads((quick_phantom_evaluation / "metrics.json").read_text())
    expected = headline(m)["retrieval acc, CLS"]["text"]
    # Both columns, the CLS row starred (the random init's own representation), the paper beside.
    assert f"| retrieval acc, CLS | {expected} * | {expected} * | {expected} * | 0.944 |" in table
    assert f"| retrieval acc, mean token | {headline(m)['retrieval acc, mean token']['text']} |" in table
    assert "landmark error px, NCC template (no model)" in table and "# reused" in table
    assert "| run_a | global 0.01, comp 0.5 (teacher temperature 0.02) | 2 of 15 (3 epochs) | 1.5 |" in table
    assert "| random init |" not in table.split("## Pretraining")[1]
    for figure in ("t_compositionality.png", "t_landmark_errors.png", "t_landmark_window_errors.png"):
        assert f"({figure})" in table and (tmp_path / "results" / figure).stat().st_size > 0


def test_pooled_features_embed_each_batch_once():
    class Counting:
        config = {"img_size": 32, "patch_size": 16, "embed_dim": 2}
        calls = 0

        def embed(self, images, batch_size=64):
            Counting.calls += 1
            x = np.asarray(images, np.float64)
            tokens = np.stack([x[:, :16, :16].mean((1, 2)), x[:, 16:, 16:].mean((1, 2))], -1)
            return x.max(axis=(1, 2))[:, None].repeat(2, 1), np.broadcast_to(tokens[:, None, None], (len(x), 2, 2, 2))

    images = np.random.default_rng(0).uniform(0, 1, (5, 32, 32)).astype(np.float32)
    pooled = _PooledFeatures(Counting())
    cls, tokens = pooled.embed(images)
    again = pooled.embed(images.copy())
    assert Counting.calls == 1 and again[0] is cls and tokens.shape == (5, 1, 1, 2)
    np.testing.assert_allclose(tokens[:, 0, 0], Counting().embed(images)[1].mean(axis=(1, 2)))
    pooled.embed(images[:, :, ::-1])                     # other pixels: embedded anew
    assert Counting.calls == 3 and pooled.default_features == "cls"


def test_dice_summary_averages_sides_per_image():
    per_image = {"heart": np.array([0.8, 0.8]), "left_lung": np.array([0.9, 0.5]), "right_lung": np.array([0.7, 0.5]),
                 "left_clavicle": np.array([0.2, 0.2]), "right_clavicle": np.array([0.0, 0.0])}
    s = dice_summary(per_image)
    assert s["heart"] == {"value": pytest.approx(0.8), "ci95": pytest.approx([0.8, 0.8])}
    assert s["lungs"]["value"] == pytest.approx(0.65) and s["lungs"]["ci95"] == pytest.approx([0.5, 0.8])
    assert s["clavicles"]["ci95"] == pytest.approx([0.1, 0.1]) and s["mean"]["value"] == pytest.approx(0.46)


def test_format_ci():
    assert format_ci(0.12345, [0.1, 0.2]) == "0.123 [0.100, 0.200]"
    assert format_ci(41.26, [30.0, 52.34], 1) == "41.3 [30.0, 52.3]" and format_ci(None) == "-"
    assert format_ci(0.5, [None, None]) == "0.500"


def test_evaluate_rejects_a_bad_data_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ace", "evaluate", "--random-init", "vit_nano", "--data",
                        str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 1 and "JSRT-layout" in r.stderr


def test_paired_differences_pair_trials_and_skip_what_does_not_line_up():
    groups = np.repeat(np.arange(20), 4)
    rng = np.random.default_rng(0)
    b_correct = rng.random(80) < 0.3
    a = ({}, {"correct_retrieval": np.ones(80, bool), "groups_retrieval": groups,
              "errors_keypoints": np.full((6, 3), 10.0),
              "correct_decompositionality": b_correct, "groups_decompositionality": groups})
    b = ({}, {"correct_retrieval": b_correct, "groups_retrieval": groups,
              "errors_keypoints": np.full((6, 3), 12.0),
              "correct_decompositionality": b_correct, "groups_decompositionality": groups[::-1]})
    rows = paired_differences(a, b)
    # Decisions drawn on other images are not a pair; a measurement b lacks is left out.
    assert set(rows) == {"retrieval acc, own representation", "key-point error px, fine-tuned"}
    retrieval = rows["retrieval acc, own representation"]
    assert retrieval["value"] == pytest.approx(1 - b_correct.mean()) and retrieval["better"] is True
    # Lower is better for errors: 2 px less on every image is a gain with a zero-width interval.
    keypoints = rows["key-point error px, fine-tuned"]
    assert keypoints["ci95"] == pytest.approx([-2.0, -2.0]) and keypoints["better"] is True
    assert keypoints["text"] == "-2.0 [-2.0, -2.0]"
    # Swapped, the same interval counts against the first encoder.
    assert paired_differences(b, a)["key-point error px, fine-tuned"]["better"] is False

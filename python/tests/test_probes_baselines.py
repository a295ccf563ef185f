"""Bootstrap confidence intervals, the raw-pixel template-matching baseline, and the choice
of features (CLS, mean token, the encoder's default), on cases with known answers."""
import numpy as np
import pytest

from ace import ACEError, probes
from ace.data.datasets import landmark_structures

from test_probes import IMG, CellMeans, StandIn, rng, two_level_images


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_of_constant_values_is_a_point():
    lo, hi = probes.bootstrap_ci(np.full(50, 0.7), groups=np.arange(50) % 7)
    assert lo == pytest.approx(0.7) and hi - lo < 1e-12
    # Missing values (NaN) are left out of the mean, not counted as errors.
    values = np.full((20, 3), 2.5)
    values[::3, 1] = np.nan
    assert probes.bootstrap_ci(values) == pytest.approx([2.5, 2.5])


def test_bootstrap_interval_of_a_large_sample_matches_the_normal_approximation():
    x = rng(1).normal(10.0, 2.0, 4000)
    lo, hi = probes.bootstrap_ci(x)
    assert lo < x.mean() < hi
    # 95% of a normal mean: +- 1.96 standard errors.
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.15)
    assert probes.bootstrap_ci(x) == [lo, hi]                      # fixed seed
    assert probes.bootstrap_ci(x, seed=1) != [lo, hi]


def test_bootstrap_resamples_groups_not_trials():
    # 1000 trials of one image score 0, one trial of another image scores 1. By trial the
    # mean is about 0.001; by image, a resample holds the second image twice a quarter of
    # the time (mean 1) and only the first a quarter of the time (mean 0).
    values = np.r_[np.zeros(1000), 1.0]
    groups = np.r_[np.zeros(1000, int), 1]
    assert probes.bootstrap_ci(values, groups) == [0.0, 1.0]
    assert probes.bootstrap_ci(values)[1] < 0.01


def test_bootstrap_of_pairs_counts_a_pair_only_when_both_images_are_drawn():
    # Pairs (0, 1) and (1, 0) of two images: a resample either holds both images once (both
    # pairs, mean 2) or one image twice (no pair at all, left out).
    values, pairs = np.array([1.0, 3.0]), np.array([[0, 1], [1, 0]])
    assert probes.bootstrap_ci(values, pairs) == [2.0, 2.0]
    # Grouped by the query image alone, either pair can be drawn without the other.
    assert probes.bootstrap_ci(values, pairs[:, 0]) == [1.0, 3.0]


def test_landmark_intervals_resample_images_not_pairs():
    # Two images give two pairs, (0, 1) and (1, 0), with different errors; both pairs hold
    # both images, so every resample that holds a pair holds both: the interval is a point.
    g = rng(9)
    images = g.uniform(0, 1, (2, 64, 64))
    landmarks = g.uniform(8, 56, (2, 5, 2))
    r = probes.landmark_correspondence(CellMeans(), images, landmarks, method="window", patch=16, stride=8)
    per_pair = np.nanmean(r["errors"], axis=1)
    assert abs(per_pair[0] - per_pair[1]) > 1.0
    assert r["ci95"] == pytest.approx([r["mean_error"]] * 2)


def test_bootstrap_of_a_statistic_skips_undefined_resamples():
    # AUC of perfectly separated scores is 1 whenever both classes are drawn.
    rows = np.column_stack([np.r_[np.zeros(5), np.ones(5)], np.linspace(0, 1, 10)])

    def auc(r):
        from sklearn.metrics import roc_auc_score
        return roc_auc_score(r[:, 0], r[:, 1]) if len(np.unique(r[:, 0])) == 2 else np.nan

    assert probes.bootstrap_ci(rows, statistic=auc, resamples=200) == [1.0, 1.0]
    assert probes.bootstrap_ci(np.array([[0.0, 0.5]]), statistic=auc, resamples=20) == pytest.approx(
        [np.nan, np.nan], nan_ok=True)


def test_bootstrap_rejects_mismatched_groups():
    with pytest.raises(ACEError, match="groups"):
        probes.bootstrap_ci(np.ones(5), groups=np.arange(4))


# ---------------------------------------------------------------- template matching (NCC)
def brute_force_ncc(key, template):
    """Pearson correlation of the template with every window inside the key, by loops."""
    p = template.shape[0]
    out = np.zeros((key.shape[0] - p + 1, key.shape[1] - p + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.corrcoef(key[i:i + p, j:j + p].ravel(), template.ravel())[0, 1]
    return out


@pytest.mark.parametrize("patch", [5, 8])
def test_fft_ncc_equals_the_direct_correlation(patch):
    g = rng(2)
    key = g.uniform(0, 1, (21, 26)).astype(np.float32)
    templates = g.uniform(0, 1, (3, patch, patch)).astype(np.float32)
    t = probes._Templates(templates, key.shape)
    got = t.ncc(probes._KeyImage(key, patch, t.fft_shape))
    expected = np.stack([brute_force_ncc(key, tm) for tm in templates])
    assert got.shape == expected.shape == (3, 22 - patch, 27 - patch)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_flat_windows_and_templates_correlate_with_nothing():
    g = rng(3)
    key = g.uniform(0, 1, (20, 20)).astype(np.float32)
    key[:, :10] = 0.5                                   # windows within columns 0-9 are flat
    templates = np.stack([g.uniform(0, 1, (6, 6)), np.full((6, 6), 0.3)]).astype(np.float32)
    t = probes._Templates(templates, key.shape)
    ncc = t.ncc(probes._KeyImage(key, 6, t.fft_shape))
    assert np.isfinite(ncc).all() and np.all(ncc[1] == 0) and np.all(ncc[0, :, :5] == 0)
    np.testing.assert_allclose(ncc[0, :, 5:], brute_force_ncc(key[:, 5:], templates[0]), atol=1e-5)


def shifted_pair(shift, size=96, seed=4):
    """A random texture and the same texture moved by `shift` (dx, dy) pixels."""
    image = rng(seed).uniform(0, 1, (size, size)).astype(np.float32)
    return np.stack([image, np.roll(image, shift[::-1], axis=(0, 1))])


@pytest.mark.parametrize("patch", [15, 16])
def test_template_matching_finds_a_shifted_pattern_exactly(patch):
    shift = np.array([-5.0, 7.0])
    images = shifted_pair(shift)
    # Window centres are at integers for odd sides, half way between pixels for even ones.
    query = np.array([[40.0, 30.0], [60.0, 50.0], [30.0, 62.0]]) + (0.5 if patch % 2 == 0 else 0.0)
    landmarks = np.stack([query, query + shift])
    r = probes.template_matching_baseline(images, landmarks, patch=patch)
    assert r["pairs"] == 2 and r["features"] == "pixels"
    np.testing.assert_array_equal(r["errors"], np.zeros((2, 3)))
    np.testing.assert_array_equal(r["predicted"][0], landmarks[1])
    assert r["identity_error"] == pytest.approx(np.hypot(*shift)) and r["ci95"] == [0.0, 0.0]


def test_template_matching_predicts_the_best_window_of_a_brute_force_search():
    # Two unrelated random images: the prediction is the centre of the window with the
    # highest direct correlation, whatever it is.
    g = rng(5)
    images = g.uniform(0, 1, (2, 24, 24)).astype(np.float32)
    landmarks = np.array([[[6.0, 9.0], [15.0, 12.0]], [[10.0, 10.0], [12.0, 12.0]]])
    r = probes.template_matching_baseline(images, landmarks, patch=7, pairs=None)
    p = list(map(tuple, r["pair_indices"])).index((0, 1))
    for n, (x, y) in enumerate(landmarks[0].astype(int)):
        scores = brute_force_ncc(images[1], images[0, y - 3:y + 4, x - 3:x + 4])
        i, j = np.unravel_index(scores.argmax(), scores.shape)
        np.testing.assert_array_equal(r["predicted"][p, n], [j + 3, i + 3])


def test_template_matching_uses_the_pairs_of_landmark_correspondence():
    images = rng(6).uniform(0, 1, (6, 32, 32)).astype(np.float32)
    landmarks = np.full((6, 2, 2), 15.5)
    landmarks[2, 1] = np.nan
    a = probes.template_matching_baseline(images, landmarks, patch=8, pairs=7, seed=3)
    b = probes.landmark_correspondence(CellMeans(), images, landmarks, pairs=7, seed=3)
    np.testing.assert_array_equal(a["pair_indices"], b["pair_indices"])
    # The no-model reference is the same on the same pairs; missing landmarks stay missing.
    np.testing.assert_array_equal(a["identity_errors"], b["identity_errors"])
    assert np.isnan(a["errors"][a["pair_indices"][:, 1] == 2, 1]).all()


# ---------------------------------------------------------------- features
class TwoViews(StandIn):
    """CLS token: the share of pixels in each of 120 intensity bins (an exact summary of the
    intensities, see test_probes.Histogram); patch tokens: a constant, so the mean token
    tells nothing."""
    dim = 120

    def __init__(self, default_features=None):
        if default_features is not None:
            self.default_features = default_features

    def global_features(self, x):
        return np.stack([np.histogram(im, bins=self.dim, range=(0, 1))[0] / im.size for im in x])

    def tokens(self, x):
        return np.ones((len(x), 4, 4, self.dim))


@pytest.mark.parametrize("default", ["mean", "cls"])
def test_default_features_are_the_encoders_own(default):
    # The CLS token retrieves every patch's image (as in test_probes); the constant mean
    # token ties everywhere, so the first candidate wins: chance.
    images = two_level_images(40, bins=120)
    r = probes.retrieval(TwoViews(default), images, batch=32, trials=64, seed=3)
    assert r["features"] == default
    assert r["accuracy"] == (1.0 if default == "cls" else 1 / 32)
    assert r["ci95"] == ([1.0, 1.0] if default == "cls" else pytest.approx([0.0, 1 / 16], abs=0.02))


def test_encoders_without_a_default_use_the_cls_token():
    assert probes.resolve_features(TwoViews(), "default") == "cls"
    assert probes.resolve_features(TwoViews("mean"), "cls") == "cls"
    with pytest.raises(ACEError, match="default_features"):
        probes.resolve_features(TwoViews("tokens"), "default")
    with pytest.raises(ACEError, match="features"):
        probes.resolve_features(TwoViews(), "avg")


def test_every_global_probe_reports_its_features_and_interval():
    g = rng(8)
    images = g.uniform(0, 1, (8, IMG, IMG))
    landmarks = np.broadcast_to(np.array([[15.5, 15.5], [47.5, 15.5], [47.5, 47.5]]), (8, 3, 2))
    enc = TwoViews("mean")
    labels = np.array([0, 1] * 4)
    results = [
        probes.retrieval(enc, images, batch=4, trials=8),
        probes.landmark_embeddings(enc, images, landmarks, k=1, patch=16, tsne=False),
        probes.symmetry(enc, images, landmarks, [(0, 1)], patch=16),
        probes.landmark_correspondence(enc, images, landmarks, method="window", patch=16, stride=16, pairs=4),
    ]
    for r in results:
        value = r.get("accuracy", r.get("mean_error"))
        assert r["features"] == "mean" and r["ci95"][0] <= value <= r["ci95"][1]
    c = probes.linear_probe_classification(enc, (images, labels), (images, labels))
    assert c["features"] == "mean" and c["auc_ci95"][0] <= c["auc"] <= c["auc_ci95"][1]
    dense = probes.landmark_correspondence(enc, images, landmarks, pairs=4)
    assert dense["features"] == "tokens"


def test_binary_auc_from_ranks_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score
    g = rng(10)
    labels = g.integers(0, 2, 40)
    scores = np.round(g.uniform(0, 1, 40), 1)                     # many ties
    rows = np.column_stack([labels, 1 - scores, scores])
    assert probes._auc(rows) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(probes._auc(rows[labels == 1]))


# ---------------------------------------------------------------- anatomical structures
def test_landmark_structures_follow_the_hybridgnet_order():
    np.testing.assert_array_equal(landmark_structures([0, 43, 44, 93, 94, 119]), [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="landmark ids"):
        landmark_structures([120])

"""ace.probes on constructed cases with known answers, smoke tests with a real encoder, and ace.plots.

The known-answer cases use small stand-in encoders with the `config` / `embed` interface of
`ace.Encoder` whose features are simple functions of the pixels, so that what each probe
should return can be worked out by hand.
"""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import ace
from ace import plots, probes
from ace.data import phantom

IMG, PATCH = 64, 16          # stand-in encoders' input size and patch size: a 4 x 4 token grid
GRID = IMG // PATCH


def block_means(x, rows, cols):
    """Means of a rows x cols partition of each image (B, H, W) -> (B, rows, cols)."""
    b, h, w = x.shape
    assert h % rows == 0 and w % cols == 0, "stand-in inputs must divide into the blocks"
    return x.reshape(b, rows, h // rows, cols, w // cols).mean(axis=(2, 4))


class StandIn:
    """Base of the duck-typed encoders: the probes only use `config` and `embed`."""
    dim = 1

    @property
    def config(self):
        return {"img_size": IMG, "patch_size": PATCH, "embed_dim": self.dim, "in_chans": 1}

    def embed(self, images, batch_size=64):
        x = np.asarray(images, np.float64)
        assert x.ndim == 3 and x.dtype.kind == "f"
        return self.global_features(x).astype(np.float32), self.tokens(x).astype(np.float32)

    def tokens(self, x):
        return block_means(x, GRID, GRID)[..., None]


class CellMeans(StandIn):
    """Global feature: the mean intensity of each cell of a rows x cols partition of the
    input; tokens: the mean intensity of each token's area."""

    def __init__(self, rows=1, cols=1):
        self.rows, self.cols = rows, cols
        self.dim = rows * cols

    def global_features(self, x):
        return block_means(x, self.rows, self.cols).reshape(len(x), -1)


class Positions(StandIn):
    """Tokens: one-hot of the token's position, whatever the image."""
    dim = GRID * GRID

    def global_features(self, x):
        return np.zeros((len(x), self.dim))

    def tokens(self, x):
        return np.broadcast_to(np.eye(self.dim).reshape(GRID, GRID, self.dim), (len(x), GRID, GRID, self.dim))


class Histogram(StandIn):
    """Global feature: the share of pixels in each of `bins` equal intensity bins of [0, 1],
    an exact summary of which intensities the input holds."""

    def __init__(self, bins):
        self.dim = bins

    def global_features(self, x):
        return np.stack([np.histogram(im, bins=self.dim, range=(0, 1))[0] / im.size for im in x])


class Constant(StandIn):
    """The same feature for every input."""
    dim = 3

    def global_features(self, x):
        return np.ones((len(x), self.dim))

    def tokens(self, x):
        return np.ones((len(x), GRID, GRID, self.dim))


def rng(seed=0):
    return np.random.default_rng(seed)


def decisions(r):
    """The accuracy, trial count and chance level of an accuracy-type probe result."""
    return {k: r[k] for k in ("accuracy", "trials", "chance")}


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    """scikit-learn's t-SNE runs OpenMP threads that spin for seconds on tiny inputs when
    other jobs share the machine's two cores; one thread keeps these tests fast."""
    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def nano():
    return ace.Encoder("vit_nano", img_size=64, seed=0)


@pytest.fixture(scope="module")
def cohort():
    """Eight 64 px phantoms with masks and the 120 HybridGNet-layout landmarks."""
    images, ph = phantom.batch(range(8), size=64)
    masks = {name: np.stack([p.masks[name] for p in ph]) for name in ("heart", "left_lung", "right_lung")}
    return images, masks, phantom.landmark_array(ph)


# ---------------------------------------------------------------- compositionality
@pytest.mark.parametrize("parts", [2, 4])
def test_mean_intensity_features_are_exactly_compositional(parts):
    # Equal-sized parts: the mean of the parts' means is the patch mean, so on positive
    # images the two one-dimensional features point the same way.
    images = rng().uniform(0.1, 1.0, (5, 64, 64))
    r = probes.compositionality(CellMeans(), images, parts=parts, n=30, seed=1)
    assert r["n"] == 30 and r["cosines"].shape == (30,)
    np.testing.assert_allclose(r["cosines"], 1.0, atol=1e-9)
    assert r["mean"] == pytest.approx(1.0) and r["std"] < 1e-9


def test_compositionality_of_quadrant_means_matches_a_direct_computation():
    # A bright top-left quadrant: its four cells are bright where the whole patch's
    # top-left cell alone is, so the two features differ in direction.
    image = 0.1 + 0.8 * np.kron([[1, 0], [0, 0]], np.ones((8, 8))) + rng(2).uniform(0, 0.1, (16, 16))
    # The patch is the whole image, so there is only one place to sample it.
    r = probes.compositionality(CellMeans(2, 2), image[None], parts=4, n=3, patch=16)
    whole = [image[:8, :8].mean(), image[:8, 8:].mean(), image[8:, :8].mean(), image[8:, 8:].mean()]
    quadrants = [image[:8, :8], image[:8, 8:], image[8:, :8], image[8:, 8:]]
    parts = np.mean([[q[:4, :4].mean(), q[:4, 4:].mean(), q[4:, :4].mean(), q[4:, 4:].mean()]
                     for q in quadrants], axis=0)
    expected = np.dot(whole, parts) / np.linalg.norm(whole) / np.linalg.norm(parts)
    assert expected < 0.8
    # The stand-in hands back float32 features, as the encoder does.
    np.testing.assert_allclose(r["cosines"], expected, rtol=1e-6)


class IntensityMoments(StandIn):
    """Means of per-pixel functions of the intensity: exactly compositional over equal parts,
    and different for patches of different content."""
    dim = 4

    def global_features(self, x):
        return np.stack([x.mean((1, 2)), (x ** 2).mean((1, 2)), np.sin(6 * x).mean((1, 2)),
                         np.cos(6 * x).mean((1, 2))], 1)


def test_compositionality_gap_separates_compositional_from_uniform_features():
    # Both stand-ins give cosines near 1, the reason the control is there: only the
    # compositional one is closer to its own parts than to another patch's parts.
    images = rng(3).uniform(0, 1, (6, 64, 64)) ** rng(4).uniform(0.3, 3, (6, 1, 1))
    own = probes.compositionality(IntensityMoments(), images, n=40, seed=2)
    assert own["mean"] == pytest.approx(1.0, abs=1e-6) and own["gap"] > 0.01
    assert own["gap_ci95"][0] > 0 and own["control"] < own["mean"]
    np.testing.assert_allclose(own["gap"], np.mean(own["cosines"] - own["control_cosines"]))
    flat = probes.compositionality(Constant(), images, n=40, seed=2)
    assert flat["mean"] == pytest.approx(1.0) and flat["gap"] == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- decompositionality and retrieval
def two_level_images(n, bins, seed=0):
    """Image j is a 50/50 random mix of two intensities, the centres of bins 3j and 3j + 2,
    so its mean (the excision fill) falls in bin 3j + 1 and no two images share a bin."""
    choice = rng(seed).integers(0, 2, (n, 64, 64))
    j = np.arange(n)[:, None, None]
    return ((3 * j + 0.5 + 2 * choice) / bins).astype(np.float32)


@pytest.mark.parametrize("probe", [probes.decompositionality, probes.retrieval])
def test_intensity_content_features_decompose_and_retrieve_perfectly(probe):
    # f(C_j) shares bins with f(X_j) only, and f(X_j) - f(X_j excised) is f(C_j) scaled,
    # minus the fill's own bin 3j + 1: every cosine is 0 except the right one.
    images = two_level_images(40, bins=120)
    r = probe(Histogram(120), images, batch=32, trials=64, seed=3)
    assert decisions(r) == {"accuracy": 1.0, "trials": 64, "chance": 1 / 32}
    # Every decision is right, in every resample of the images.
    assert r["correct"].all() and r["ci95"] == [1.0, 1.0] and r["features"] == "cls"


def shuffled_images(n, seed=0):
    """Images that are random arrangements of one and the same set of pixel values: eight
    intensities, the centres of the even bins of 16, in equal shares. Every image has the
    same histogram and the same mean (the centre of the unused bin 7); 16 px crops differ."""
    values = np.repeat((4 * np.arange(8) + 1) / 32, 64 * 64 // 8).astype(np.float32)
    g = rng(seed)
    return np.stack([g.permutation(values).reshape(64, 64) for _ in range(n)])


def test_excision_identifies_patches_of_images_that_look_alike():
    # With every f(X) equal, only what excision removes, f(X_j) - f(X_j excised), which is
    # f(C_j) scaled (the fill's bin is in no crop), can tell the crops apart; matching
    # crops to whole images cannot, and every image ties.
    images = shuffled_images(40)
    decomp = probes.decompositionality(Histogram(16), images, batch=32, trials=64, seed=4)
    assert decisions(decomp) == {"accuracy": 1.0, "trials": 64, "chance": 1 / 32}
    retrieved = probes.retrieval(Histogram(16), images, batch=32, trials=64, seed=4)
    assert retrieved["accuracy"] == 1 / 32


@pytest.mark.parametrize("probe", [probes.decompositionality, probes.retrieval])
def test_content_free_features_score_exactly_chance(probe):
    # All cosines tie, the first candidate wins, so only j = 0 of each batch is right.
    images = rng().uniform(0, 1, (10, 64, 64))
    r = probe(Constant(), images, batch=8, trials=16)
    assert r["trials"] == 16 and r["accuracy"] == r["chance"] == 1 / 8


def test_batch_larger_than_the_image_set_is_refused():
    with pytest.raises(ValueError, match="distinct images"):
        probes.retrieval(Constant(), np.zeros((4, 64, 64)), batch=8)


# ---------------------------------------------------------------- landmark correspondence
def token_centres(size):
    """x or y pixel coordinates of the 4 token centres across an image side of `size`."""
    return (np.arange(GRID) + 0.5) * size / GRID - 0.5


def test_dense_correspondence_on_identical_images_is_exact(nano):
    image = rng(4).uniform(0, 1, (128, 128)).astype(np.float32)
    c = token_centres(128)
    landmarks = np.stack(np.meshgrid(c, c), -1).reshape(1, -1, 2).repeat(2, axis=0)
    r = probes.landmark_correspondence(nano, np.stack([image, image]), landmarks, method="dense")
    assert r["pairs"] == 2 and r["errors"].shape == (2, 16)
    assert np.array_equal(r["errors"], np.zeros((2, 16)))
    assert r["mean_error"] == 0.0 and r["median_error"] == 0.0


def test_window_correspondence_on_identical_images_is_exact(nano):
    image = rng(5).uniform(0, 1, (64, 64)).astype(np.float32)
    patch, stride = 32, 16
    # Key windows start at k * stride - patch // 2; their centres are (patch - 1) / 2 further.
    c = np.arange(1, 4) * stride - patch // 2 + (patch - 1) / 2
    landmarks = np.stack(np.meshgrid(c, c), -1).reshape(1, -1, 2).repeat(2, axis=0)
    r = probes.landmark_correspondence(nano, np.stack([image, image]), landmarks, method="window",
                                       patch=patch, stride=stride)
    assert np.array_equal(r["errors"], np.zeros((2, 9)))


def test_dense_correspondence_of_position_features_is_the_landmark_displacement():
    # Features that only know the token position map every point to the same place in the
    # key, so the error is how far the landmark moved, in pixels of the 128 px inputs.
    c = token_centres(128)                           # 15.5, 47.5, 79.5, 111.5
    query = np.array([[c[0], c[0]], [c[1], c[2]], [31.5, c[3]], [c[2], c[2]]])
    key = np.array([[c[1], c[0]], [c[1], c[2]], [c[3], c[3]], [np.nan, np.nan]])
    r = probes.landmark_correspondence(Positions(), np.zeros((2, 128, 128)), np.stack([query, key]),
                                       pairs=None)
    first = list(map(tuple, r["pair_indices"])).index((0, 1))
    # Landmark 2 lies half way between token centres, a point of the 4x finer search grid.
    np.testing.assert_array_equal(r["predicted"][first, :3], query[:3])
    np.testing.assert_allclose(r["errors"][first], [32.0, 0.0, 111.5 - 31.5, np.nan])
    # Position features predict the query's coordinates: exactly the "same coordinates" reference.
    assert r["identity_error"] == pytest.approx(r["mean_error"])
    assert np.isnan(r["per_landmark"][3])
    assert r["mean_error"] == pytest.approx(np.mean([32.0, 0.0, 80.0] * 2))


def test_random_pairs_are_a_seeded_subset():
    images, landmarks = np.zeros((5, 64, 64)), np.full((5, 2, 2), 31.5)
    a = probes.landmark_correspondence(Positions(), images, landmarks, pairs=6, seed=1)
    b = probes.landmark_correspondence(Positions(), images, landmarks, pairs=6, seed=1)
    assert a["pairs"] == 6 and np.array_equal(a["pair_indices"], b["pair_indices"])
    assert all(q != k for q, k in a["pair_indices"]) and len(set(map(tuple, a["pair_indices"]))) == 6


# ---------------------------------------------------------------- landmark embeddings and symmetry
def quadrant_images(levels, n, seed=0):
    """n images whose quadrants (row-major) have the given intensities plus a little noise."""
    g = rng(seed)
    images = np.empty((n, 64, 64))
    for i in range(n):
        blocks = np.asarray(levels).reshape(2, 2)
        images[i] = np.kron(blocks, np.ones((32, 32))) + g.normal(0, 0.01, (64, 64))
    return np.clip(images, 0, 1)


def test_landmarks_in_distinct_regions_have_distinct_embeddings():
    images = quadrant_images([0.2, 0.4, 0.6, 0.8], n=6)
    # Landmarks near the quadrant centres: 16 px windows stay inside their quadrant.
    centres = np.array([[15.5, 15.5], [47.5, 15.5], [15.5, 47.5], [47.5, 47.5]])
    landmarks = centres + rng(1).integers(-4, 5, (6, 4, 2))
    landmarks[0, 3] = np.nan
    r = probes.landmark_embeddings(CellMeans(), images, landmarks, k=3, patch=16)
    assert r["trials"] == 23 and r["embeddings"].shape == (23, 1) and r["tsne"].shape == (23, 2)
    assert r["accuracy"] == r["knn_accuracy"] == 1.0
    assert r["chance"] == pytest.approx(6 / 23)
    assert r["silhouette"] > 0.9
    np.testing.assert_array_equal(np.bincount(r["ids"]), [6, 6, 6, 5])


def test_embeddings_without_landmark_information_are_not_separated():
    images = rng(6).uniform(0, 1, (6, 64, 64))
    landmarks = np.broadcast_to(np.array([[15.5, 15.5], [47.5, 47.5]]), (6, 2, 2))
    r = probes.landmark_embeddings(Constant(), images, landmarks, patch=16, tsne=False)
    assert r["silhouette"] == 0.0 and r["tsne"] is None and r["chance"] == 0.5


SYMMETRY_LANDMARKS = np.array([[15.5, 15.5], [47.5, 15.5], [47.5, 47.5], [15.5, 47.5]])
SYMMETRY_PAIRS = [(0, 1), (3, 2)]       # left structures 0 and 3, their mirror images 1 and 2


def test_symmetry_with_flip_invariant_features():
    # Each mirror pair shares an intensity; the mean intensity does not change on flipping.
    images = quadrant_images([0.3, 0.3, 0.7, 0.7], n=3)
    landmarks = np.broadcast_to(SYMMETRY_LANDMARKS, (3, 4, 2))
    r = probes.symmetry(CellMeans(), images, landmarks, SYMMETRY_PAIRS, patch=16)
    assert decisions(r) == {"accuracy": 1.0, "trials": 6, "chance": 0.5}
    np.testing.assert_array_equal(r["image_index"], [0, 0, 1, 1, 2, 2])


def test_symmetry_flips_the_left_side_patch():
    # Structure 0 is bright | dark, its mirror 1 dark | bright; structure 3 is dark | bright
    # and its mirror 2 bright | dark. Left/right half means tell them apart, so the right
    # answer needs the flip: unflipped, 0 would match 2 and 3 would match 1.
    bright_dark = np.kron([[0.9, 0.1]], np.ones((32, 16)))
    quadrants = [[bright_dark, bright_dark[:, ::-1]], [bright_dark[:, ::-1], bright_dark]]
    image = np.block(quadrants)
    images = np.clip(image + rng(7).normal(0, 0.01, (3, 64, 64)), 0, 1)
    landmarks = np.broadcast_to(SYMMETRY_LANDMARKS, (3, 4, 2))
    r = probes.symmetry(CellMeans(1, 2), images, landmarks, SYMMETRY_PAIRS, patch=16)
    assert decisions(r) == {"accuracy": 1.0, "trials": 6, "chance": 0.5}


# ---------------------------------------------------------------- linear probe
def test_linear_probe_on_features_that_encode_the_label():
    g = rng(8)
    labels = g.integers(0, 2, 80)
    images = 0.3 + 0.4 * labels[:, None, None] + g.normal(0, 0.02, (80, 64, 64))
    r = probes.linear_probe_classification(CellMeans(), (images[:40], labels[:40]), (images[40:], labels[40:]))
    assert r["auc"] == 1.0 and r["accuracy"] == 1.0
    assert r["n_train"] == r["n_test"] == r["trials"] == 40


def test_linear_probe_on_random_labels_is_near_chance():
    g = rng(9)
    images = g.uniform(0, 1, (400, 64, 64))
    labels = g.integers(0, 2, 400)
    r = probes.linear_probe_classification(CellMeans(4, 4), (images[:200], labels[:200]),
                                           (images[200:], labels[200:]), features="cls")
    assert 0.4 < r["auc"] < 0.6
    assert abs(r["accuracy"] - 0.5) < 0.1


# ---------------------------------------------------------------- segmentation
def test_dice():
    target = np.zeros((32, 32), bool)
    target[10:20, 10:20] = True
    assert probes.dice(target, target) == 1.0
    assert probes.dice(np.zeros_like(target), np.zeros_like(target)) == 1.0
    assert probes.dice(np.roll(target, 2, axis=1), target) == pytest.approx(2 * 80 / 200)
    assert probes.dice(np.roll(target, 15, axis=1), target) == 0.0


def stripe_cohort(n, seed=0):
    """Images with a bright left stripe one, two or three tokens wide, and its masks."""
    g = rng(seed)
    widths = g.integers(1, 4, n) * PATCH
    left = np.zeros((n, 64, 64), bool)
    for mask, w in zip(left, widths):
        mask[:, :w] = True
    images = 0.2 + 0.6 * left + g.normal(0, 0.02, left.shape)
    masks = {"left": left, "empty": np.zeros_like(left), "full": np.ones_like(left)}
    return images, masks


def test_segmentation_of_intensity_coded_stripes_is_perfect():
    # Stripe edges fall on token edges, where the upsampled probability crosses 0.5;
    # "empty" and "full" have no area of the other class to learn from.
    images, masks = stripe_cohort(12)
    train = (images[:8], {k: m[:8] for k, m in masks.items()})
    test = (images[8:], {k: m[8:] for k, m in masks.items()})
    r = probes.segmentation(CellMeans(), train, test)
    assert r["shots"] == 8
    assert r["dice"] == {"left": 1.0, "empty": 1.0, "full": 1.0}
    np.testing.assert_array_equal(r["dice_per_image"]["left"], np.ones(4))
    few = probes.segmentation(CellMeans(), train, test, shots=2, seed=1)
    assert few["shots"] == 2 and few["dice"]["left"] == 1.0
    # The same masks as one (N, S, H, W) array named by `structures`.
    as_array = lambda m: np.stack([m["left"], m["full"]], 1)
    r2 = probes.segmentation(CellMeans(), (train[0], as_array(train[1])), (test[0], as_array(test[1])),
                             structures=["left", "full"])
    assert r2["dice"] == {"left": 1.0, "full": 1.0}


def test_segmentation_without_informative_tokens_fails():
    images, masks = stripe_cohort(12)
    r = probes.segmentation(Constant(), (images[:8], {"left": masks["left"][:8]}),
                            (images[8:], {"left": masks["left"][8:]}))
    assert r["dice"]["left"] < 0.9


def test_segmentation_finetune_learns_through_the_core_and_keeps_the_encoder():
    """Phantom hearts at 64 px: end-to-end fine-tuning through the core's backward pass
    beats the same training with the encoder's learning rate at zero (head only)."""
    images, cohort = phantom.batch(range(40), size=64)
    hearts = np.stack([p.masks["heart"] for p in cohort])
    train, test = (images[:32], {"heart": hearts[:32]}), (images[32:], {"heart": hearts[32:]})
    enc = ace.Encoder("vit_nano", img_size=64, seed=0)
    before = enc.state_dict()
    settings = dict(epochs=30, batch=8, head_lr=3e-2)
    frozen = probes.segmentation(enc, train, test, mode="finetune", finetune=dict(settings, lr=0.0))
    tuned = probes.segmentation(enc, train, test, mode="finetune", finetune=dict(settings, lr=1e-3))
    assert tuned["dice"]["heart"] > frozen["dice"]["heart"] + 0.05, (frozen["dice"], tuned["dice"])
    assert all(np.array_equal(v, enc.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="mode"):
        probes.segmentation(enc, train, test, mode="mae")


# ---------------------------------------------------------------- smoke tests with a real encoder
def test_global_probes_run_on_a_real_encoder(nano, cohort):
    images = cohort[0]
    comp = probes.compositionality(nano, images, parts=2, n=8)
    assert comp["cosines"].shape == (8,) and np.all(np.abs(comp["cosines"]) <= 1 + 1e-9)
    again = probes.compositionality(nano, images, parts=2, n=8)
    np.testing.assert_array_equal(comp["cosines"], again["cosines"])
    assert not np.array_equal(comp["cosines"], probes.compositionality(nano, images, parts=2, n=8, seed=1)["cosines"])
    for probe in (probes.decompositionality, probes.retrieval):
        r = probe(nano, images, batch=4, trials=8, features="mean")
        assert 0 <= r["accuracy"] <= 1 and r["chance"] == 0.25 and r["features"] == "mean"
        assert r["correct"].shape == r["image_index"].shape == (8,)
        assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]


@pytest.mark.parametrize("method", ["dense", "window"])
def test_landmark_correspondence_runs_on_a_real_encoder(nano, cohort, method):
    images, _, landmarks = cohort
    r = probes.landmark_correspondence(nano, images[:3], landmarks[:3], method=method, patch=16, pairs=2)
    assert r["errors"].shape == (2, 120) and r["per_landmark"].shape == (120,) and r["pairs"] == 2
    assert r["predicted"].shape == (2, 120, 2) and np.isfinite(r["errors"]).all()
    assert 0 <= r["median_error"] and 0 <= r["mean_error"] < 64 * np.sqrt(2)


def test_landmark_probes_run_on_a_real_encoder(nano, cohort):
    images, _, landmarks = cohort
    # Every tenth landmark keeps t-SNE small.
    emb = probes.landmark_embeddings(nano, images[:4], landmarks[:4, ::10], patch=16)
    assert emb["embeddings"].shape == (48, nano.config["embed_dim"]) and emb["tsne"].shape == (48, 2)
    assert 0 <= emb["accuracy"] <= 1 and -1 <= emb["silhouette"] <= 1 and np.isfinite(emb["tsne"]).all()
    # Lung apices and costophrenic angles: right lung 0 / 21, left lung 44 / 65.
    sym = probes.symmetry(nano, images[:4], landmarks[:4], [(44, 0), (65, 21)], patch=16)
    assert sym["trials"] == 8 and sym["chance"] == 0.5 and 0 <= sym["accuracy"] <= 1


def test_transfer_probes_run_on_a_real_encoder(nano, cohort):
    images, masks, _ = cohort
    labels = np.array([0, 1] * 4)
    for features in ("cls", "mean"):
        r = probes.linear_probe_classification(nano, (images[:4], labels[:4]), (images[4:], labels[4:]),
                                               features=features)
        assert 0 <= r["auc"] <= 1 and r["n_train"] == r["n_test"] == 4
    seg = probes.segmentation(nano, (images[:5], {k: m[:5] for k, m in masks.items()}),
                              (images[5:], {k: m[5:] for k, m in masks.items()}), shots=3)
    assert seg["shots"] == 3 and set(seg["dice"]) == set(masks)
    assert all(0 <= d <= 1 and seg["dice_per_image"][k].shape == (3,) for k, d in seg["dice"].items())


# ---------------------------------------------------------------- plots
def test_every_plot_writes_a_png(tmp_path):
    g = rng(10)
    image = g.uniform(0, 1, (64, 64))
    points = g.uniform(0, 64, (10, 2))
    errors = {"ace": g.gamma(2, 3, (6, 10)), "dino": g.gamma(3, 3, (6, 10))}
    history = [{"step": s, "loss": 5 / (s + 1), "global": 3 / (s + 1), "comp": 0.0, "decomp": 0.0}
               for s in range(20)]
    paths = [
        plots.compositionality_kde({"ace": g.uniform(0.8, 1, 50), "constant": np.ones(5)}, tmp_path / "kde.png"),
        plots.tsne_plot(g.normal(size=(30, 2)), np.repeat(np.arange(3), 10), tmp_path / "tsne.png",
                        names=["apex", "angle", "heart"]),
        plots.landmark_predictions(image, image, points, points + 3, tmp_path / "pred.png", true_q=points),
        plots.error_boxplot(errors, tmp_path / "box.png"),
        plots.error_boxplot(errors, tmp_path / "box_lm.png", by="landmark"),
        plots.loss_curves(history, tmp_path / "sub" / "loss.png"),
    ]
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000

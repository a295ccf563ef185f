"""Grid-wise crop geometry, proven on coordinate images, and the local loss against NumPy."""
import numpy as np
import pytest

import ace
from ace import _native

CFG = ace.PretrainConfig()          # default geometry: 512 px image, 32 cells, n = 14
G = CFG.grid
N = G.fine_cells
CELL = G.image_size // G.grid_cells


@pytest.fixture(scope="module")
def crops():
    return ace.grid_crops(CFG, seed=3, n=200)


def test_sampler_covers_asymmetric_positions(crops):
    """The sample must contain crops whose x and y offsets differ, or a transposed mask
    could go unnoticed."""
    asym = [c for c in crops if c["c1_box"][0] - c["c2_box"][0] != c["c1_box"][1] - c["c2_box"][1]]
    assert len(asym) > 100


def test_boxes_respect_grid_parity_and_overlap(crops):
    for c in crops:
        x0, y0, x1, y1 = c["c1_box"]
        X0, Y0, X1, Y1 = c["c2_box"]
        assert x1 - x0 == y1 - y0 == N * CELL and X1 - X0 == Y1 - Y0 == 2 * N * CELL
        assert 0 <= min(x0, y0, X0, Y0) and max(x1, y1, X1, Y1) <= G.image_size
        assert all(v % CELL == 0 for v in (x0, y0, X0, Y0))
        assert ((x0 - X0) // CELL) % 2 == 0 and ((y0 - Y0) // CELL) % 2 == 0
        ox, oy = min(x1, X1) - max(x0, X0), min(y1, Y1) - max(y0, Y0)
        assert ox >= G.min_overlap * 2 * CELL and oy >= G.min_overlap * 2 * CELL


def token_boxes(box, side, token_px):
    """Pixel boxes (x0, y0, x1, y1) of a side x side token grid laid over `box`, row = y."""
    x0, y0 = box[:2]
    return [(x0 + c * token_px, y0 + r * token_px, x0 + (c + 1) * token_px, y0 + (r + 1) * token_px)
            for r in range(side) for c in range(side)]


def paint(boxes, selected):
    img = np.zeros((G.image_size, G.image_size), bool)
    for (x0, y0, x1, y1), s in zip(boxes, selected):
        if s:
            img[y0:y1, x0:x1] = True
    return img


def test_overlap_masks_cover_exactly_the_intersection(crops):
    for c in crops:
        inter = np.zeros((G.image_size, G.image_size), bool)
        x0, y0 = max(c["c1_box"][0], c["c2_box"][0]), max(c["c1_box"][1], c["c2_box"][1])
        x1, y1 = min(c["c1_box"][2], c["c2_box"][2]), min(c["c1_box"][3], c["c2_box"][3])
        inter[y0:y1, x0:x1] = True
        o1 = paint(token_boxes(c["c1_box"], N, CELL), c["o1"].ravel())
        o2 = paint(token_boxes(c["c2_box"], N, 2 * CELL), c["o2"].ravel())
        assert np.array_equal(o1, inter) and np.array_equal(o2, inter)
        assert c["o1"].any() and c["o2"].any()


def test_target_rows_outside_overlap_are_zero_and_peaks_are_one(crops):
    for c in crops:
        assert not c["t_comp"][~c["o2"].ravel()].any()
        assert not c["t_decomp"][~c["o1"].ravel()].any()
        # Each teacher token inside the overlap has exactly one exact match (T = 1), and
        # window neighbours at distance 1 carry exp(-1/2).
        assert np.all((c["t_comp"][c["o2"].ravel()] == 1).sum(1) == 1)
        assert np.all((c["t_decomp"][c["o1"].ravel()] == 1).sum(1) == 1)
        vals = np.unique(c["t_decomp"])
        np.testing.assert_allclose(vals, [0, np.exp(-1.0), np.exp(-0.5), 1], rtol=1e-6)


@pytest.fixture(scope="module")
def coordinate_views():
    """The same crops (same seed) of an x-coordinate and a y-coordinate image, through the
    core's own crop-and-resize path."""
    ys, xs = np.mgrid[0:G.image_size, 0:G.image_size].astype(np.float32)
    cx = ace.grid_crops(CFG, seed=11, n=40, image=xs)
    cy = ace.grid_crops(CFG, seed=11, n=40, image=ys)
    return cx, cy


def block_means(view, side):
    """Mean of each cell of a side x side grid over a square view, row-major."""
    s = view.shape[0] // side
    return view.reshape(side, s, side, s).mean(axis=(1, 3)).ravel()


def test_matched_pairs_cover_the_same_pixels(coordinate_views):
    """For every pair with target 1, the teacher token and the student's composed or
    decomposed token are centred on the same image point; their regions have equal size by
    construction, so they cover the same pixels."""
    cx, cy = coordinate_views
    for a, b in zip(cx, cy):
        assert a["c1_box"] == b["c1_box"]
        # Composition: C2 tokens (teacher) vs 2x2 blocks of C1 tokens.
        c2_centres = np.stack([block_means(a["c2_view"], N), block_means(b["c2_view"], N)], 1)
        blocks = np.stack([block_means(a["c1_view"], N // 2), block_means(b["c1_view"], N // 2)], 1)
        i, j = np.nonzero(a["t_comp"] == 1)
        assert len(i) == a["o2"].sum()
        np.testing.assert_allclose(c2_centres[i], blocks[j], atol=1e-3)
        # Decomposition: C1 tokens (teacher) vs the 2N x 2N sub-tokens of the C2 view.
        c1_centres = np.stack([block_means(a["c1_view"], N), block_means(b["c1_view"], N)], 1)
        subs = np.stack([block_means(a["c2_view"], 2 * N), block_means(b["c2_view"], 2 * N)], 1)
        i, j = np.nonzero(a["t_decomp"] == 1)
        assert len(i) == a["o1"].sum()
        np.testing.assert_allclose(c1_centres[i], subs[j], atol=1e-3)
        # And unmatched neighbours are one token away (so the test can tell them apart).
        i, j = np.nonzero((a["t_decomp"] > 0) & (a["t_decomp"] < 1))
        d = np.abs(c1_centres[i] - subs[j]).max(1)
        np.testing.assert_allclose(d, CELL, atol=1e-3)


def test_transposed_masks_would_fail(coordinate_views):
    """The authors' released code builds the masks transposed; on asymmetric crops that is
    visibly wrong here."""
    cx, _ = coordinate_views
    wrong = sum(not np.array_equal(c["o1"], c["o1"].T) for c in cx)
    assert wrong > 0


def numpy_local_loss(teacher, z, targets, alpha, scale):
    """Independent NumPy version of the matching loss and its gradient (float64)."""
    t = teacher / np.maximum(np.linalg.norm(teacher, axis=-1, keepdims=True), 1e-6)
    zn = np.linalg.norm(z, axis=-1, keepdims=True)
    zh = z / np.maximum(zn, 1e-6)
    u = scale * np.einsum("bnc,bmc->bnm", t, zh)
    m = 1 / (1 + np.exp(-u))
    w = alpha * targets + (1 - alpha) * (1 - targets)
    bce = -(targets * np.log(m) + (1 - targets) * np.log(1 - m))
    loss = (w * bce).mean(axis=(1, 2)).mean()
    rows = targets.max(-1) > 0
    accuracy = (u.argmax(-1) == targets.argmax(-1))[rows].mean()
    b, n, nz = targets.shape
    g = w * (m - targets) * scale / (b * n * nz)
    dzh = np.einsum("bnm,bnc->bmc", g, t)
    dz = (dzh - (dzh * zh).sum(-1, keepdims=True) * zh) / zn
    return loss, accuracy, dz


@pytest.mark.parametrize("kind,alpha", [("t_comp", 0.9), ("t_decomp", 0.99)])
def test_local_loss_matches_numpy(crops, kind, alpha):
    rng = np.random.default_rng(5)
    targets = np.stack([c[kind] for c in crops[:3]]).astype(np.float32)
    b, n, nz = targets.shape
    teacher = rng.standard_normal((b, n, 8)).astype(np.float32)
    z = rng.standard_normal((b, nz, 8)).astype(np.float32)
    loss, accuracy, dz = _native.local_match_loss(teacher, z, targets, alpha, 1 / 0.07)
    ref_loss, ref_accuracy, ref_dz = numpy_local_loss(teacher.astype(np.float64), z.astype(np.float64), targets, alpha, 1 / 0.07)
    assert loss == pytest.approx(ref_loss, rel=1e-4)
    assert accuracy == pytest.approx(ref_accuracy)
    np.testing.assert_allclose(dz, ref_dz, rtol=1e-3, atol=1e-3 * np.abs(ref_dz).max())


def test_local_loss_accuracy_is_one_for_the_exact_composition():
    """Teacher tokens = the C2 view's token means of a feature image, student composed
    tokens = the means of the matching C1 blocks: every overlap row finds its peak."""
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((G.image_size // CELL, G.image_size // CELL, 8)).astype(np.float32)
    image_feats = np.repeat(np.repeat(feats, CELL, 0), CELL, 1)
    crops = ace.grid_crops(CFG, seed=2, n=3)
    teacher, z = [], []
    for c in crops:
        X0, Y0, X1, Y1 = c["c2_box"]
        x0, y0, x1, y1 = c["c1_box"]
        c2 = image_feats[Y0:Y1, X0:X1].reshape(N, 2 * CELL, N, 2 * CELL, 8).mean((1, 3))
        c1 = image_feats[y0:y1, x0:x1].reshape(N // 2, 2 * CELL, N // 2, 2 * CELL, 8).mean((1, 3))
        teacher.append(c2.reshape(-1, 8))
        z.append(c1.reshape(-1, 8))
    targets = np.stack([c["t_comp"] for c in crops])
    _, accuracy, _ = _native.local_match_loss(np.stack(teacher), np.stack(z), targets, 0.9, 1 / 0.07)
    assert accuracy == 1.0


def test_invalid_geometry_is_rejected():
    bad = ace.PretrainConfig()
    bad.grid.min_overlap = 20
    with pytest.raises(ace.ACEError, match="min_overlap"):
        ace.grid_crops(bad, n=1)
    bad = ace.PretrainConfig()
    bad.grid.input_size = 208
    with pytest.raises(ace.ACEError, match="input_size"):
        ace.grid_crops(bad, n=1)

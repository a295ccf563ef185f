"""The recipe options that reproduce the paper or the authors' released code, through the API."""
import numpy as np
import pytest
from safetensors.numpy import load_file

import ace

TINY = dict(encoder="vit_nano", batch_size=2, epochs=2, steps_per_epoch=5, head_hidden=32,
            head_bottleneck=16, head_prototypes=64, precision="fp32",
            grid=dict(image_size=128, grid_cells=8, fine_cells=2, input_size=32, min_overlap=1))


def batch(seed=0):
    return np.random.default_rng(seed).random((2, 150, 130), dtype=np.float32)


def test_authors_recipe_sets_every_departure_and_overrides_win():
    cfg = ace.PretrainConfig.recipe("authors", encoder="vit_nano", grid={"sigma": 2.0})
    assert cfg.grid.decomp_window == 5 and cfg.grid.window == 3 and cfg.grid.sigma == 2.0
    assert cfg.augment.clahe_p == 0.3 and cfg.pre_crop_scale_min == 0.85 and cfg.local_head == "authors"
    assert (cfg.global_weight, cfg.comp_weight, cfg.decomp_weight) == (0.1, 0.5, 0.5)
    assert cfg.weight_decay_tokens is True and cfg.encoder == "vit_nano"
    assert ace.PretrainConfig.recipe("paper") == ace.PretrainConfig()
    with pytest.raises(ace.ACEError, match="recipe"):
        ace.PretrainConfig.recipe("mine")


def test_decomposition_window_5_reaches_two_cells():
    def widest_offset(cfg):
        crop = ace.grid_crops(cfg, seed=3, n=1)[0]
        t = crop["t_decomp"]                  # (N fine tokens, (2n)^2 sub-tokens), offsets in cells
        n = cfg.grid.fine_cells
        x0, y0 = crop["c1_box"][:2]
        cx0, cy0 = crop["c2_box"][:2]
        cell = cfg.grid.image_size // cfg.grid.grid_cells
        widest = 0
        for i, j in zip(*np.nonzero(t)):
            fy, fx = y0 // cell + i // n, x0 // cell + i % n
            sy, sx = cy0 // cell + j // (2 * n), cx0 // cell + j % (2 * n)
            widest = max(widest, abs(fy - sy), abs(fx - sx))
        return widest, t[t > 0].min()

    paper = ace.PretrainConfig(encoder="vit_nano")
    authors = ace.PretrainConfig(encoder="vit_nano", grid=dict(decomp_window=5))
    assert widest_offset(paper) == (1, pytest.approx(np.exp(-1.0)))       # 3 x 3: diagonal neighbour
    assert widest_offset(authors) == (2, pytest.approx(np.exp(-4.0)))     # 5 x 5: two cells, both axes


@pytest.mark.parametrize("option", [
    dict(pre_crop_scale_min=0.85), dict(augment=dict(clahe_p=1.0)), dict(local_head="authors"),
    dict(weight_decay_tokens=True),
])
def test_each_option_trains_deterministically(option):
    def run():
        t = ace.Trainer(ace.PretrainConfig.recipe("paper", **TINY, **option), seed=4)
        return [t.step(batch(i)) for i in range(3)]
    a, b = run(), run()
    assert a == b and all(np.isfinite(s["loss"]) for s in a)
    plain = ace.Trainer(ace.PretrainConfig.recipe("paper", **TINY), seed=4)
    assert [plain.step(batch(i)) for i in range(3)] != a        # the option changes the run


def test_frozen_last_layer_gets_no_update_then_trains(tmp_path):
    t = ace.Trainer(ace.PretrainConfig.recipe("paper", **TINY, lr=0.5), seed=0)
    def last_layer():
        t.save(tmp_path / "run.safetensors")
        return load_file(str(tmp_path / "run.safetensors"))["head.last_layer.weight_v"]
    start = last_layer()
    for i in range(5):                       # the first epoch: frozen (no weight decay either)
        t.step(batch(i))
    np.testing.assert_array_equal(last_layer(), start)
    t.step(batch(5))
    assert not np.array_equal(last_layer(), start)
    resumed = ace.Trainer.load(tmp_path / "run.safetensors")
    assert resumed.step(batch(6)) == t.step(batch(6))   # per-parameter Adam counts survive a resume

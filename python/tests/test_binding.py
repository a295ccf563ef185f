"""ace._native: one handle type for encoders and trainers, and the step's statistics by name."""
import gc
import re
from pathlib import Path

import numpy as np
import pytest

import ace
from ace import _native

ROOT = Path(__file__).resolve().parents[2]


def tiny_config():
    cfg = ace.PretrainConfig(encoder="vit_nano", batch_size=2, epochs=1, steps_per_epoch=4, head_hidden=32,
                             head_bottleneck=16, head_prototypes=64, precision="fp32")
    cfg.grid = ace.GridConfig(image_size=128, grid_cells=8, fine_cells=4, input_size=64, min_overlap=2)
    return cfg


def test_stats_are_named_by_the_core_and_match_their_values():
    header = (ROOT / "include" / "ace.h").read_text()
    count = int(re.search(r"#define ACE_TRAINER_STATS (\d+)", header).group(1))
    assert len(_native.STAT_NAMES) == count and len(set(_native.STAT_NAMES)) == count
    cfg = tiny_config()
    trainer = ace.Trainer(cfg, seed=3)
    batch = np.random.default_rng(0).random((2, 128, 128), dtype=np.float32)
    raw = trainer._native.step(batch[:, None])   # the binding takes (B, C, H, W)
    assert list(raw) == list(_native.STAT_NAMES) and all(isinstance(v, float) for v in raw.values())
    stats = trainer.step(batch)
    # The values sit under their own names: the step counts, the loss is the weighted sum of its
    # terms, accuracies are fractions, the schedules stay within their ranges.
    assert stats["step"] == 2 and isinstance(stats["step"], int) and raw["step"] == 1.0
    expected = (cfg.global_weight * stats["global"] + cfg.comp_weight * stats["comp"]
                + cfg.decomp_weight * stats["decomp"])
    assert stats["loss"] == pytest.approx(expected, rel=1e-6)
    assert 0 <= stats["comp_acc"] <= 1 and 0 <= stats["decomp_acc"] <= 1 and stats["grad_norm"] > 0
    peak = cfg.lr * cfg.batch_size / 256
    assert 0 < stats["lr"] < raw["lr"] == pytest.approx(peak)    # no warm-up in 4 steps: cosine from the peak
    assert cfg.momentum_teacher <= stats["momentum"] <= 1 and cfg.weight_decay < stats["wd"] < cfg.weight_decay_end


@pytest.mark.parametrize("kind, call, what", [
    (_native.Encoder, lambda h: h.config_json(), "encoder"),
    (_native.Encoder, lambda h: h.forward_features(np.zeros((1, 1, 32, 32), np.float32),
                                                   np.zeros((1, 5, 96), np.float32)), "encoder"),
    (_native.Trainer, lambda h: h.steps(), "trainer"),
    (_native.Trainer, lambda h: h.step(np.zeros((2, 64, 64), np.float32)), "trainer"),
    (_native.Trainer, lambda h: h.save("x.safetensors"), "trainer"),
])
def test_an_uninitialized_handle_is_an_error_naming_its_kind(kind, call, what):
    handle = kind.__new__(kind)
    with pytest.raises(ace.ACEError, match=f"{what} is not initialized"):
        call(handle)
    del handle
    gc.collect()        # freeing a handle that never held one


def test_init_again_replaces_the_handle_and_views_outlive_their_trainer():
    enc = _native.Encoder("vit_nano", 1, 32)
    enc.__init__("vit_nano", 1, 64)
    assert '"img_size": 64' in enc.config_json() or '"img_size":64' in enc.config_json()
    with pytest.raises(ace.ACEError, match="preset"):
        enc.__init__("vit_giant")
    assert "64" in enc.config_json()             # a failed init keeps the handle it had
    trainer = _native.Trainer(tiny_config().to_json(), 1)
    teacher = trainer.encoder(1)
    assert type(teacher) is _native.Encoder
    weights = teacher.get_tensor(0)
    del trainer
    gc.collect()
    assert np.array_equal(teacher.get_tensor(0), weights)
    with pytest.raises(ace.ACEError, match="encoder must be 0"):
        _native.Trainer(tiny_config().to_json(), 1).encoder(2)


def test_loading_a_missing_file_is_an_error_for_both_kinds(tmp_path):
    for load in (_native.load_encoder, _native.load_trainer):
        with pytest.raises(ace.ACEError):
            load(str(tmp_path / "missing.safetensors"))


def test_changing_the_thread_count_during_training_steps_changes_nothing():
    # Per-worker scratch (attention backward, the views' canvases) is sized from the thread
    # count that the same call then splits the work by: another thread changing the count
    # mid-step (here up to 8 on a run started with 2) cannot make a worker write past it. On
    # these small shapes some products' row splits follow the thread count, so the results
    # agree to rounding, not bit for bit.
    import threading

    batches = [np.random.default_rng(i).random((2, 128, 128), dtype=np.float32) for i in range(4)]

    def steps():
        trainer = ace.Trainer(tiny_config(), seed=5)
        return [trainer.step(b) for b in batches], trainer.student.state_dict()

    before = ace.get_num_threads()
    try:
        ace.set_num_threads(2)
        expected, weights = steps()
        done = threading.Event()

        def retune():
            counts = [1, 8, 2, 3, 1, 6]
            i = 0
            while not done.is_set():
                ace.set_num_threads(counts[i % len(counts)])
                i += 1

        tuner = threading.Thread(target=retune)
        tuner.start()
        try:
            got, got_weights = steps()
        finally:
            done.set()
            tuner.join()
    finally:
        ace.set_num_threads(before)
    assert [g["step"] for g in got] == [1, 2, 3, 4]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-4, abs=1e-6)
    for k in weights:
        np.testing.assert_allclose(got_weights[k], weights[k], rtol=1e-3, atol=1e-5)

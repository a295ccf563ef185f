"""ace.Trainer: determinism, exact resume, objectives, views, checkpoints and bad input."""
import json

import numpy as np
import pytest

import ace



def small_config(**overrides):
    """vit_nano on a 256 px image, 16 cells, 6x6-token views: seconds per test."""
    cfg = ace.PretrainConfig(encoder="vit_nano", batch_size=2, epochs=2, steps_per_epoch=10,
                             head_hidden=64, head_bottleneck=32, head_prototypes=128, lr=0.05)
    cfg.grid = ace.GridConfig(image_size=256, grid_cells=16, fine_cells=6, input_size=96, min_overlap=2)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def images(n=2, seed=0, size=300):
    """Smooth random images with structure (so the losses have something to match)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(2, 6, 4)
        out.append(0.5 + 0.25 * np.sin(f[0] * xs * 6 + f[1]) * np.cos(f[2] * ys * 6 + f[3]))
    return np.stack(out).astype(np.float32)


def run(trainer, steps, seed=0):
    return [trainer.step(images(2, seed=seed * 1000 + i)) for i in range(steps)]


def test_config_json_round_trip():
    cfg = small_config(losses=["comp"], clip_mode="global")
    again = ace.PretrainConfig.from_json(cfg.to_json())
    assert again == cfg
    assert ace.Trainer(cfg).config == cfg
    with pytest.raises(ace.ACEError, match="unknown"):
        ace.PretrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 1})
    with pytest.raises(ace.ACEError, match="objective"):
        ace.Trainer(small_config(objective="mae"))
    with pytest.raises(ace.ACEError, match="losses"):
        ace.Trainer(small_config(losses=["global", "mim"]))
    with pytest.raises(ace.ACEError, match="preset"):
        ace.Trainer(small_config(encoder="vit_giant"))


def test_same_seed_same_losses_for_20_steps():
    a = run(ace.Trainer(small_config(), seed=4), 20)
    b = run(ace.Trainer(small_config(), seed=4), 20)
    assert a == b
    c = run(ace.Trainer(small_config(), seed=5), 3)
    assert c != a[:3]
    assert all(np.isfinite([s["loss"], s["global"], s["comp"], s["decomp"]]).all() for s in a)


def test_resume_at_step_10_equals_uninterrupted_run(tmp_path):
    straight = ace.Trainer(small_config(), seed=7)
    full = run(straight, 20)

    first = ace.Trainer(small_config(), seed=7)
    head = run(first, 10)
    first.save(tmp_path / "run.safetensors")
    del first
    resumed = ace.Trainer.load(tmp_path / "run.safetensors")
    tail = [resumed.step(images(2, seed=i)) for i in range(10, 20)]
    assert head + tail == full
    for name, value in straight.teacher.state_dict().items():
        assert np.array_equal(value, resumed.teacher.state_dict()[name]), name
    for name, value in straight.student.state_dict().items():
        assert np.array_equal(value, resumed.student.state_dict()[name]), name


def test_objectives_and_ablations_switch_terms():
    for losses in (["comp"], ["comp", "decomp"], ["global", "comp", "decomp"]):
        s = ace.Trainer(small_config(losses=losses)).step(images())
        for term in ("global", "comp", "decomp"):
            assert (s[term] != 0) == (term in losses), (losses, term, s)
    dino = ace.Trainer(small_config(objective="dino")).step(images())
    assert dino["global"] > 0 and dino["comp"] == 0 and dino["decomp"] == 0
    assert dino["loss"] == pytest.approx(dino["global"])


def test_schedules_follow_dino():
    cfg = small_config(warmup_fraction=0.25)
    stats = run(ace.Trainer(cfg), 20)
    base = cfg.lr * cfg.batch_size / 256
    lrs = [s["lr"] for s in stats]
    # DINO's warm-up is np.linspace(0, base, 5): base reached at the last warm-up step.
    assert lrs[0] == 0 and lrs[2] == pytest.approx(base / 2, rel=1e-6) and lrs[4] == pytest.approx(base, rel=1e-6)
    assert max(lrs) == pytest.approx(base, rel=1e-6) and lrs[-1] < base / 10
    assert stats[0]["wd"] == pytest.approx(0.04) and stats[-1]["wd"] > 0.39
    assert stats[0]["momentum"] == pytest.approx(0.996) and stats[-1]["momentum"] > 0.9999


def test_student_and_teacher_views_share_weights(tmp_path):
    t = ace.Trainer(small_config(), seed=1)
    before = t.teacher.state_dict()["blocks.0.attn.qkv.weight"]
    student_before = t.student.state_dict()["blocks.0.attn.qkv.weight"]
    assert np.array_equal(before, student_before)   # the teacher starts as a copy
    run(t, 3)
    after = t.teacher.state_dict()["blocks.0.attn.qkv.weight"]
    assert not np.array_equal(before, after)
    assert t.teacher.config["drop_path"] == 0 and t.student.config["drop_path"] == pytest.approx(0.1)
    cls, tokens = t.teacher.embed(images(3), batch_size=2)
    assert cls.shape == (3, 96) and tokens.shape == (3, 6, 6, 96)
    # A run checkpoint loads as an encoder: its teacher.
    t.save(tmp_path / "run.safetensors")
    enc = ace.Encoder.load(tmp_path / "run.safetensors")
    np.testing.assert_array_equal(enc.embed(images(3))[0], t.teacher.embed(images(3))[0])
    t.teacher.save(tmp_path / "teacher.safetensors")
    assert set(ace.Encoder.load(tmp_path / "teacher.safetensors").state_dict()) == set(t.teacher.state_dict())


@pytest.mark.parametrize("bad,message", [
    (np.zeros((0, 64, 64), np.float32), "empty"),
    (np.zeros((64, 64), np.float32), "shape"),
    (np.full((2, 64, 64), np.nan, np.float32), "NaN"),
    (np.zeros((2, 64, 64), np.int32), "dtype"),
])
def test_bad_batches_raise_and_the_run_continues(bad, message):
    t = ace.Trainer(small_config())
    with pytest.raises(ace.ACEError, match=message):
        t.step(bad)
    assert t.step(images())["step"] == 1


def test_bad_run_checkpoints(tmp_path):
    t = ace.Trainer(small_config())
    enc = ace.Encoder("vit_nano")
    enc.save(tmp_path / "encoder.safetensors")
    with pytest.raises(ace.ACEError, match="not a training checkpoint"):
        ace.Trainer.load(tmp_path / "encoder.safetensors")
    t.save(tmp_path / "run.safetensors")
    data = (tmp_path / "run.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ace.ACEError):
        ace.Trainer.load(tmp_path / "cut.safetensors")
    with pytest.raises(ace.ACEError, match="no checkpoint"):
        ace.Trainer.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_thread_count_does_not_change_training(precision):
    """Every reduction (products, bias and LayerNorm gradients, gradient norms) has a fixed
    order, so a run resumed with another thread count continues bit for bit."""
    def two_steps(threads):
        ace.set_num_threads(threads)
        cfg = ace.PretrainConfig(encoder="vit_nano", batch_size=4, head_prototypes=1024, precision=precision)
        trainer = ace.Trainer(cfg, seed=1)
        batch = np.random.default_rng(0).integers(0, 256, (4, 512, 512), dtype=np.uint8)
        stats = [trainer.step(batch) for _ in range(2)]
        return stats, trainer.student.embed(batch[:2])[1]
    before = ace.get_num_threads()
    try:
        (one, tokens_one), (two, tokens_two) = two_steps(1), two_steps(2)
    finally:
        ace.set_num_threads(before)
    assert one == two
    assert np.array_equal(tokens_one, tokens_two)


def test_step_equals_compute_then_apply_bit_for_bit():
    """The two halves a data-parallel step is made of, with nothing in between, are `step`."""
    cfg = small_config(drop_path=0.2)
    a, b = ace.Trainer(cfg, seed=3), ace.Trainer(cfg, seed=3)
    for i in range(6):
        sa = a.step(images(2, seed=i))
        b.compute_gradients(images(2, seed=i))
        assert b.apply_gradients() == sa
    for enc in ("student", "teacher"):
        wa, wb = getattr(a, enc).state_dict(), getattr(b, enc).state_dict()
        assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ace.ACEError, match="compute_gradients first"):
        b.apply_gradients()


def test_gradient_and_center_buffers_are_the_cores_memory():
    t = ace.Trainer(small_config(), seed=1)
    grads, center = t.gradients, t.center_statistic
    assert grads.dtype == np.float32 and grads.flags.writeable and center.shape == (128,)
    t.compute_gradients(images(2))
    norm = float(np.sqrt(np.sum(grads.astype(np.float64) ** 2)))
    assert norm > 0 and np.abs(center).sum() > 0
    assert t.apply_gradients()["grad_norm"] == pytest.approx(norm, rel=1e-5)   # the norm of this buffer
    assert not grads.any()      # zeroed by the update
    # Writes go to the core: doubled gradients give a doubled norm.
    t.compute_gradients(images(2, seed=1))
    norm = float(np.sqrt(np.sum(grads.astype(np.float64) ** 2)))
    grads *= 2
    assert t.apply_gradients()["grad_norm"] == pytest.approx(2 * norm, rel=1e-5)
    del t
    assert grads.sum() == 0     # the array keeps the run's memory alive

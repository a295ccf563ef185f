"""One file resumes a run: `ace pretrain` keeps its run state (data, seed, length, data order)
in the checkpoint's metadata, and the data stream seeks to a step without replaying the ones
before it."""
import json
import signal
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

import ace
from ace import cli
from ace.data import ImageStream
from ace.data.images import epoch_permutation

RUN = ["pretrain", "--preset", "vit_nano", "--steps", "8", "--batch-size", "2", "--image-size", "256",
       "--threads", "1", "--precision", "fp32", "--checkpoint-every", "100", "--set", "head_prototypes=64"]


def numbered(n, size=4):
    """n images whose pixels all hold their index / n: a batch names its images."""
    return (np.arange(n, dtype=np.float32)[:, None, None] / n * np.ones((n, size, size), np.float32))


def ids(batch, n):
    return np.rint(batch[:, 0, 0] * n).astype(int).tolist()


@pytest.mark.parametrize("order", ["per_epoch", "chained"])
@pytest.mark.parametrize("shard", [(0, 1), (1, 3)])
def test_seek_lands_where_replaying_the_stream_does(order, shard):
    images = numbered(14)
    for start in (0, 2, 4, 5, 9, 13):      # 4 batches per epoch: inside epochs and on their edges
        with ImageStream(images, 3, 4, seed=6, order=order, shard=shard) as replayed:
            expected = [ids(b, 14) for _, b in zip(range(start + 5), replayed)][start:]
        with ImageStream(images, 3, 4, seed=6, order=order, shard=shard) as resumed:
            got = [ids(b, 14) for _, b in zip(range(5), iter(resumed.seek(start)))]
        assert got == expected, (order, shard, start)


def test_a_far_position_is_computed_not_replayed():
    # Step k = epoch k // 4, images from (k % 4) * 3 of that epoch's own permutation: found at
    # once even a billion epochs in (replaying would draw a billion permutations).
    images, k = numbered(14), 4 * 10**9 + 2
    t0 = time.perf_counter()
    with ImageStream(images, 3, 4, seed=6) as stream:
        batch = next(iter(stream.seek(k)))
    assert time.perf_counter() - t0 < 5
    assert ids(batch, 14) == epoch_permutation(6, 10**9, 14)[6:9].tolist()


def test_the_chained_order_is_the_order_of_runs_saved_with_run_json():
    # Runs started before the run state moved into the checkpoint drew each epoch's permutation
    # from one generator seeded with the seed; resuming them keeps that order.
    rng = np.random.default_rng(6)
    epochs = [rng.permutation(14) for _ in range(3)]
    expected = [order[i * 3:(i + 1) * 3].tolist() for order in epochs for i in range(4)]
    with ImageStream(numbered(14), 3, 4, seed=6, order="chained") as stream:
        got = [ids(b, 14) for _, b in zip(range(12), stream)]
    assert got == expected
    with pytest.raises(ValueError, match="order"):
        ImageStream(numbered(14), 3, 4, order="random")


def test_run_state_round_trips_through_the_checkpoint(tmp_path):
    cfg = ace.PretrainConfig(encoder="vit_nano", batch_size=2, head_prototypes=64, precision="fp32")
    trainer = ace.Trainer(cfg, seed=1)
    assert trainer.run_state is None
    trainer.save(tmp_path / "none.safetensors")
    assert ace.Trainer.load(tmp_path / "none.safetensors").run_state is None
    trainer.run_state = {"seed": 1, "data": "/x", "steps": 5, "data_order": "per_epoch"}
    trainer.save(tmp_path / "run.safetensors")
    assert ace.Trainer.load(tmp_path / "run.safetensors").run_state == trainer.run_state
    trainer.run_state = {"bad": object()}
    with pytest.raises(ace.ACEError, match="JSON"):
        trainer.save(tmp_path / "bad.safetensors")


def pretrain(*args, stop_after=None, monkeypatch=None):
    """`ace pretrain` in this process; with stop_after, Ctrl-C arrives during that step."""
    if stop_after is not None:
        step = ace.Trainer.step

        def interrupting_step(self, images):
            stats = step(self, images)
            if stats["step"] == stop_after:
                signal.raise_signal(signal.SIGINT)
            return stats
        monkeypatch.setattr(ace.Trainer, "step", interrupting_step)
    try:
        return cli.main([*RUN, *map(str, args)])
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()


def resume(checkpoint):
    return cli.main(["pretrain", "--resume", str(checkpoint), "--threads", "1"])


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_images):
    out = tmp_path_factory.mktemp("straight")
    assert pretrain("--data", tiny_images, "--out", out) == 0
    return out


def test_the_checkpoint_alone_resumes_the_run_bit_for_bit(straight, tiny_images, tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    # Stopped in the second epoch (6 images, batches of 2: 3 steps an epoch).
    assert pretrain("--data", tiny_images, "--out", out, stop_after=4, monkeypatch=monkeypatch) == 130
    assert ace.Trainer.load(out / "last.safetensors").steps_done == 4
    only = tmp_path / "elsewhere"
    only.mkdir()
    (out / "last.safetensors").rename(only / "last.safetensors")     # nothing else of the run beside it
    assert not (out / "run.json").exists()
    state = ace.Trainer.load(only / "last.safetensors").run_state
    assert state["seed"] == 0 and state["steps"] == 8 and state["data"] == str(tiny_images)
    assert resume(only / "last.safetensors") == 0
    a, b = load_file(str(only / "last.safetensors")), load_file(str(straight / "last.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert losses(out)[:4] + losses(only) == losses(straight)


def test_cpu_time_is_counted_on_across_a_resume(tiny_images, tmp_path, monkeypatch, capsys):
    # Each row's cpu_s is the run's CPU seconds so far; a resumed run continues from the last
    # kept row (made large here, so a count restarted from zero could not pass for it).
    out = tmp_path / "cpu"
    assert pretrain("--data", tiny_images, "--out", out, stop_after=4, monkeypatch=monkeypatch) == 130
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cpu = [r["cpu_s"] for r in rows]
    assert 0 < cpu[0] and all(b > a for a, b in zip(cpu, cpu[1:]))
    for r in rows:
        r["cpu_s"] += 1000.0
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert resume(out / "last.safetensors") == 0
    after = [json.loads(line)["cpu_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert after[:4] == [c + 1000.0 for c in cpu] and len(after) == 8
    assert all(b > a for a, b in zip(after, after[1:]))
    # The resumed steps add this process's CPU since it started, no more.
    assert after[-1] - after[3] < time.process_time()
    assert f"({after[-1] / 60:.1f} min of CPU)" in capsys.readouterr().out


def test_old_runs_resume_from_run_json_and_files_without_state_are_refused(tiny_images, tmp_path, monkeypatch,
                                                                           capsys):
    out = tmp_path / "old"
    assert pretrain("--data", tiny_images, "--out", out, stop_after=2, monkeypatch=monkeypatch) == 130
    # What a run saved by an older ace looks like: no run state in the file, run.json beside it.
    trainer = ace.Trainer.load(out / "last.safetensors")
    trainer.run_state = None
    trainer.save(out / "last.safetensors")
    capsys.readouterr()
    assert resume(out / "last.safetensors") == 1
    err = capsys.readouterr().err
    assert "holds no run state" in err and "run.json" in err
    (out / "run.json").write_text(json.dumps({"seed": 0, "data": str(tiny_images), "steps": 8, "ranks": 1}))
    assert resume(out / "last.safetensors") == 0
    assert len(losses(out)) == 8
    state = ace.Trainer.load(out / "last.safetensors").run_state     # carried into the file from now on
    assert state["data_order"] == "chained" and state["steps"] == 8 and state["ranks"] == 1

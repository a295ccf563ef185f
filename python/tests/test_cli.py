"""The `ace` command end to end: pretrain on real JSRT files, embed, interrupt and resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import JSRT_IMAGES as JSRT, needs_jsrt

PRETRAIN = ["pretrain", "--data", str(JSRT), "--preset", "vit_nano", "--steps", "30", "--batch-size", "8",
            "--checkpoint-every", "10"]


def ace(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "ace", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def tensorboard_losses(out):
    """(step, loss) of the run's TensorBoard events, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("loss/total")]


def assert_tensorboard_matches_metrics(out):
    # Steps redone after a resume replace the earlier events of those steps.
    rows = metrics(out)
    assert [step for step, _ in tensorboard_losses(out)] == [r["step"] for r in rows]
    np.testing.assert_allclose([loss for _, loss in tensorboard_losses(out)], [r["loss"] for r in rows], rtol=1e-6)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    ace(*PRETRAIN, "--out", out)
    return out


@needs_jsrt
def test_pretrain_then_embed(straight_run, tmp_path):
    out = straight_run
    for name in ("config.json", "metrics.jsonl", "last.safetensors", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "run.json").exists()       # the run's state is in the checkpoint
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert json.loads((out / "config.json").read_text())["encoder"] == "vit_nano"

    ace("embed", "--checkpoint", out / "last.safetensors", "--data", JSRT, "--out", tmp_path / "emb.npz", "--tokens")
    emb = np.load(tmp_path / "emb.npz")
    n = len(list(JSRT.glob("*.png")))
    assert emb["cls"].shape == (n, 96) and emb["tokens"].shape == (n, 14, 14, 96)
    assert len(emb["paths"]) == n and emb["paths"][0].endswith(".png")


@needs_jsrt
def test_interrupted_run_resumes_to_the_same_weights(straight_run, tmp_path):
    out = tmp_path / "interrupted"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "ace", *PRETRAIN, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout
    stopped = len(metrics(out))
    assert 5 <= stopped < 30

    ace("pretrain", "--resume", out / "last.safetensors")
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(straight_run)]
    assert_tensorboard_matches_metrics(out)
    a, b = load_file(str(out / "last.safetensors")), load_file(str(straight_run / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@needs_jsrt
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint_to_the_same_weights(straight_run, tmp_path):
    # kill -9 gives the run no chance to save: it resumes from the last periodic checkpoint
    # (every 10 steps), redoes the lost steps, and still ends bit for bit on the straight run.
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ace", *PRETRAIN, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 13:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    assert 10 <= ace_steps(out / "last.safetensors") < 30
    ace("pretrain", "--resume", out / "last.safetensors")
    a, b = load_file(str(out / "last.safetensors")), load_file(str(straight_run / "last.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in b)
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(straight_run)]
    assert_tensorboard_matches_metrics(out)


def ace_steps(checkpoint):
    import ace as ace_package
    return ace_package.Trainer.load(checkpoint).steps_done


def test_pretrain_on_the_phantom_without_data(tmp_path):
    ace("pretrain", "--preset", "vit_nano", "--steps", "2", "--batch-size", "2", "--out", tmp_path)
    assert len(metrics(tmp_path)) == 2
    assert (tmp_path / "loss.png").exists()


def test_bad_input_gives_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = ace("pretrain", "--data", empty, "--preset", "vit_nano", "--steps", "1", "--out", tmp_path / "o", check=False)
    assert r.returncode == 1 and "no readable image" in r.stderr and "Traceback" not in r.stderr
    r = ace("embed", "--checkpoint", tmp_path / "missing.safetensors", "--data", empty, "--out", tmp_path / "e.npz",
            check=False)
    assert r.returncode == 1 and "no checkpoint" in r.stderr
    r = ace("pretrain", "--resume", tmp_path / "nothing.safetensors", check=False)
    assert r.returncode == 1 and "nothing.safetensors" in r.stderr


def test_submodules_are_reachable_without_slowing_import():
    # `import ace` must not pull in matplotlib or scikit-learn; the submodules load on first use.
    code = ("import sys, ace; heavy = {'matplotlib', 'sklearn'} & set(sys.modules); assert not heavy, heavy; "
            "print(ace.probes.retrieval.__name__, ace.plots.loss_curves.__name__, ace.data.load_images.__name__, "
            "ace.evaluate.run_suite.__name__, ace.export.export_timm.__name__); ace.nonexistent")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["retrieval", "loss_curves", "load_images", "run_suite", "export_timm"], r.stderr
    assert r.stderr.strip().endswith("AttributeError: module 'ace' has no attribute 'nonexistent'"), r.stderr


def test_help_is_complete():
    top = ace("--help").stdout
    assert all(command in top for command in ("pretrain", "embed", "evaluate", "export"))
    pre = ace("pretrain", "--help").stdout
    for flag in ("--data", "--preset", "--objective", "--epochs", "--steps", "--batch-size", "--lr", "--out",
                 "--resume", "--seed", "--threads", "--checkpoint-every", "--config", "--set"):
        assert flag in pre, flag
    emb = ace("embed", "--help").stdout
    for flag in ("--checkpoint", "--data", "--out", "--tokens"):
        assert flag in emb, flag
    exp = ace("export", "--help").stdout
    for flag in ("CKPT", "--out", "--which", "local-dir"):
        assert flag in exp, flag


@pytest.mark.skipif(shutil.which("ace") is None, reason="the ace entry point is not installed")
def test_entry_point_matches_module():
    r = subprocess.run(["ace", "pretrain", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ace("pretrain", "--help").stdout

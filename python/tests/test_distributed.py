"""Data-parallel pretraining on MPI (ace.distributed): `mpiexec -n 2` against one process.

The runs are in distributed_worker.py (vit_nano, 128 px images, global batch 16, 1 thread per
process). Skipped, naming what is missing, without mpi4py or an `mpiexec`.

Tolerance. 2 ranks x 8 images compute the same views, masks, drop-path masks and losses as
1 process x 16 images (every draw is keyed by the image's global position), so the only
difference is the order of the float32 sums: each rank sums the weight gradients of its 8
images and the allreduce adds the two halves, where one process adds all 16 rows in its GEMM's
order; that is ~1e-7 relative per gradient. AdamW divides each update by sqrt(v), which
magnifies differences in coordinates with near-zero gradients; after 20 steps (products in
fp32) the weights differ by 2.6e-6 of the distance training moved them (measured; max |dw|
5e-6). We require < 1e-4, and the per-step losses to agree to 1e-5 relative. A run with the
draws keyed by local positions instead (the ranks then see other crops) differs by ~0.5, so
the bound is far from the noise it must catch.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ace

WORKER = Path(__file__).with_name("distributed_worker.py")
# The processes started here import the same `ace` as this one (installed, or the source tree
# with its built extension), whatever their working folder.
ACE_PATH = str(Path(ace.__file__).resolve().parents[1])
TOLERANCE = 1e-4   # |w_2ranks - w_1process| / |w_1process - w_initial| after 20 steps


def missing_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed (pip install ".[mpi]")'
    if shutil.which("mpiexec") is None:
        return 'no mpiexec on PATH (pip install ".[mpi]" installs the mpich wheel, which has one)'
    return None


pytestmark = pytest.mark.skipif(missing_mpi() is not None, reason=f"MPI tests skipped: {missing_mpi()}")


def run(tmp_path, name, steps, ranks=1, *extra):
    env = dict(os.environ, PYTHONPATH=ACE_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = tmp_path / f"{name}.npz"
    cmd = [sys.executable, str(WORKER), str(out), str(steps), *map(str, extra)]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks)] + cmd
    subprocess.run(cmd, check=True, env=env, timeout=300, cwd=tmp_path)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mpi")
    return {"tmp": tmp, "initial": run(tmp, "initial", 0), "one": run(tmp, "one", 20),
            "two": run(tmp, "two", 20, 2)}


def distance(a, b, initial):
    return np.linalg.norm(a["weights"] - b["weights"]) / np.linalg.norm(a["weights"] - initial["weights"])


def test_two_ranks_of_8_match_one_process_of_16(runs):
    one, two = runs["one"], runs["two"]
    assert int(two["ranks"]) == 2 and int(one["ranks"]) == 1
    assert int(one["steps"]) == int(two["steps"]) == 20
    assert distance(one, two, runs["initial"]) < TOLERANCE
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-5)   # loss terms, grad norm


def test_all_ranks_hold_identical_weights_after_every_step(runs):
    assert len(runs["two"]["identical"]) == 20 and runs["two"]["identical"].all()


def test_draws_keyed_by_local_positions_break_the_match(runs):
    """The control that shows the tolerance can fail."""
    wrong = run(runs["tmp"], "local", 20, 2, "--local-positions")
    assert distance(runs["one"], wrong, runs["initial"]) > 0.1


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_on_a_different_number_of_ranks_continues_the_run(runs, first, second):
    tmp = runs["tmp"]
    ckpt = tmp / f"half-{first}.safetensors"
    half = run(tmp, f"half-{first}", 20, first, "--stop-at", 10, "--checkpoint", ckpt)
    assert int(half["steps"]) == 10
    resumed = run(tmp, f"resumed-{first}-{second}", 20, second, "--resume", ckpt)
    assert int(resumed["steps"]) == 20
    if second > 1:
        assert resumed["identical"].all()
    # Steps 11-20 continue the uninterrupted run's data order and schedules.
    assert distance(runs["one"], resumed, runs["initial"]) < TOLERANCE
    np.testing.assert_allclose(resumed["history"], runs["one"]["history"][10:], rtol=1e-5)


def test_embed_split_across_ranks_is_gathered_in_input_order(tmp_path):
    from PIL import Image

    import ace
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(7):      # 7 images over 2 ranks: parts of 3 and 4
        Image.fromarray(rng.integers(0, 256, (80, 90), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    ace.Encoder("vit_nano", img_size=64, seed=1).save(tmp_path / "enc.safetensors")
    env = dict(os.environ, PYTHONPATH=ACE_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""))
    outs = []
    for ranks in (1, 2):
        out = tmp_path / f"e{ranks}.npz"
        cmd = [sys.executable, "-m", "ace", "embed", "--checkpoint", str(tmp_path / "enc.safetensors"),
               "--data", str(folder), "--out", str(out), "--tokens", "--batch-size", "2"]
        subprocess.run((["mpiexec", "-n", "2"] if ranks == 2 else []) + cmd, check=True, env=env, timeout=120)
        outs.append(np.load(out))
    one, two = outs
    assert [Path(p).name for p in two["paths"]] == [f"{i:02d}.png" for i in range(7)]
    assert list(two["paths"]) == list(one["paths"])
    np.testing.assert_allclose(two["cls"], one["cls"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["tokens"], one["tokens"], rtol=1e-5, atol=1e-6)


def test_a_step_failing_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    """NaN images on rank 1 at step 3: both ranks raise the core's message, the run keeps
    the weights of step 2, identical on both ranks."""
    r = run(tmp_path, "nan", 20, 2, "--fail", 1, 3, "nan")
    assert int(r["steps"]) == 2 and r["identical"].all()
    assert "NaN" in str(r["failure"])


def test_a_crash_on_one_rank_ends_the_whole_job(tmp_path):
    """A Python error on rank 1 only: the job ends (MPI_Abort after the report) instead of
    rank 0 waiting forever in the allreduce."""
    env = dict(os.environ, PYTHONPATH=ACE_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = ["mpiexec", "-n", "2", sys.executable, str(WORKER), str(tmp_path / "x.npz"), "20", "--fail", "1", "3", "crash"]
    r = subprocess.run(cmd, env=env, timeout=120, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0
    assert "deliberate crash on rank 1" in r.stderr and "stopping every rank" in r.stderr
    assert not (tmp_path / "x.npz").exists()


def test_cli_sigterm_stops_both_ranks_cleanly_and_one_process_resumes(tmp_path):
    """mpiexec -n 2 ace pretrain (global batch 4) on the phantom, SIGTERM to the launcher (as a
    scheduler sends): rank 0 saves, the job exits 143; `ace pretrain --resume` on one process
    finishes the run with the same global batch."""
    import json
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=ACE_PATH + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "run"
    cmd = ["mpiexec", "-n", "2", sys.executable, "-m", "ace", "pretrain", "--preset", "vit_nano", "--steps", "30",
           "--batch-size", "2", "--image-size", "256", "--precision", "fp32", "--out", str(out)]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and job.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted at step" in stdout and "SIGTERM" in stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 2 <= steps[-1] < 30 and steps == list(range(1, steps[-1] + 1))
    assert json.loads((out / "config.json").read_text())["batch_size"] == 4
    assert ace.Trainer.load(out / "last.safetensors").run_state["ranks"] == 2
    subprocess.run([sys.executable, "-m", "ace", "pretrain", "--resume", str(out / "last.safetensors")],
                   env=env, check=True, timeout=300, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))

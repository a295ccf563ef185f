"""Every argument a user can get wrong gets an ace.ACEError naming it, never a crash, a bare
TypeError or a silently changed value; the command line stops cleanly on SIGTERM and on a
full disk."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ace
from ace import probes


def ace_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ace", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.mark.parametrize("kwargs,name", [
    (dict(in_chans=1.5), "in_chans"), (dict(img_size=32.7), "img_size"), (dict(img_size=2**31), "img_size"),
    (dict(img_size=1_600_000), "img_size"), (dict(seed=-1), "seed"), (dict(seed=2**64), "seed"),
    (dict(seed=1.0), "seed"), (dict(std=float("inf")), "std"), (dict(std=0), "std"),
    (dict(mean=float("nan")), "mean"), (dict(drop_path=float("nan")), "drop_path"),
    (dict(precision="fp16"), "precision"), (dict(in_chans=True), "in_chans"),
])
def test_encoder_arguments(kwargs, name):
    with pytest.raises(ace.ACEError, match=name):
        ace.Encoder("vit_nano", **kwargs)


@pytest.mark.parametrize("field,value", [
    ("encoder", None), ("in_chans", 1.5), ("lr", float("nan")), ("teacher_temp", float("inf")),
    ("head_prototypes", 10**12), ("head_hidden", 2**62), ("batch_size", 0), ("losses", ["comp", "x"]),
    ("epochs", 2**40), ("precision", "fp16"), ("local_head", "big"), ("weight_decay_tokens", 1),
])
def test_config_fields_are_named(field, value):
    with pytest.raises(ace.ACEError, match=field):
        ace.Trainer(ace.PretrainConfig(**{"encoder": "vit_nano", field: value}))


def test_config_from_a_json_list_and_grid_crops_of_a_string():
    with pytest.raises(ace.ACEError, match="dict"):
        ace.PretrainConfig.from_dict([1, 2])
    with pytest.raises(ace.ACEError, match="config"):
        ace.grid_crops(config="x")


def test_float_images_outside_unit_range_say_how_to_scale():
    enc = ace.Encoder("vit_nano", img_size=32)
    with pytest.raises(ace.ACEError, match="divide by"):
        enc.embed(np.full((1, 32, 32), 255.0, np.float32))
    t = ace.Trainer(ace.PretrainConfig(encoder="vit_nano", batch_size=1, head_hidden=32, head_bottleneck=16,
                                       head_prototypes=64))
    with pytest.raises(ace.ACEError, match=r"\[0, 1\]"):
        t.step(np.full((1, 64, 64), -3.0, np.float32))
    assert t.steps_done == 0


def test_huge_inputs_are_refused_before_allocating():
    enc = ace.Encoder("vit_nano")
    with pytest.raises(ace.ACEError, match="memory|limit"):
        enc.forward_features(np.zeros((1, 1, 4096, 4096), np.float32))
    with pytest.raises(ace.ACEError):
        enc.embed(np.zeros((1, 100_000_000, 1), np.uint8))


def test_backward_checks_shape_and_dtype():
    enc = ace.Encoder("vit_nano", img_size=32, precision="fp32")
    feats = enc.forward_train(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ace.ACEError, match="shape"):
        enc.backward(np.zeros(feats.shape[::-1], np.float32))
    for bad in (np.array(["x"] * feats.size).reshape(feats.shape), feats.astype(complex), feats.astype(object)):
        with pytest.raises(ace.ACEError, match="dtype"):
            enc.backward(bad)


def test_probes_refuse_degenerate_input():
    enc = ace.Encoder("vit_nano", img_size=32)
    images = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    outside = np.full((4, 3, 2), 1000.0)
    with pytest.raises(ace.ACEError, match="outside"):
        probes.landmark_embeddings(enc, images, outside)
    with pytest.raises(ace.ACEError, match="NaN"):
        probes.landmark_correspondence(enc, images, np.full((4, 3, 2), np.nan))
    with pytest.raises(ace.ACEError, match="infinite"):
        probes.landmark_correspondence(enc, images, np.full((4, 3, 2), np.inf))
    with pytest.raises(ace.ACEError, match="images"):
        probes.retrieval(enc, np.zeros((0, 64, 64), np.float32))


def test_thread_counts_beyond_int32_are_named():
    with pytest.raises(ace.ACEError, match="thread count"):
        ace.set_num_threads(99_999_999_999)
    assert ace.get_num_threads() >= 1


@pytest.mark.parametrize("args", [["--steps", "-5"], ["--steps", "0"], ["--threads", "0"], ["--batch-size", "0"],
                                  ["--threads", "99999999999"],
                                  ["--lr", "nan"], ["--precision", "fp16"], ["--recipe", "mine"]])
def test_cli_refuses_nonsense_options(args, tmp_path):
    r = ace_cli("pretrain", "--preset", "vit_nano", "--out", tmp_path, *args)
    assert r.returncode == 2 and args[0] in r.stderr and "Traceback" not in r.stderr


def test_cli_config_that_is_not_an_object(tmp_path):
    cfg = tmp_path / "list.json"
    cfg.write_text("[1, 2]")
    r = ace_cli("pretrain", "--config", cfg, "--preset", "vit_nano", "--steps", "1", "--out", tmp_path / "o")
    assert r.returncode == 1 and "list.json" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_saves_the_run_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ace", "pretrain", "--preset", "vit_nano", "--steps", "500",
                             "--batch-size", "2", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in stderr
    done = ace.Trainer.load(out / "last.safetensors").steps_done
    assert done >= 3 and done == len((out / "metrics.jsonl").read_text().splitlines())


def test_cli_writes_precision_and_recipe(tmp_path):
    r = ace_cli("pretrain", "--preset", "vit_nano", "--steps", "1", "--batch-size", "2", "--recipe", "authors",
                "--precision", "fp32", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    run = ace.Trainer.load(tmp_path / "last.safetensors").run_state
    assert run["precision"]["precision"] == "fp32" and run["precision"]["auto"] in ("bf16", "fp32")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["local_head"] == "authors" and cfg["grid"]["decomp_window"] == 5


def test_embed_to_a_full_disk_is_a_clear_error(tmp_path):
    # RLIMIT_FSIZE makes the write fail (EFBIG) as a full disk does (ENOSPC).
    import resource
    ckpt = tmp_path / "enc.safetensors"
    ace.Encoder("vit_nano", img_size=32).save(ckpt)
    img = tmp_path / "img.png"
    from PIL import Image
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(img)
    out = tmp_path / "out"
    out.mkdir()

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    r = subprocess.run([sys.executable, "-m", "ace", "embed", "--checkpoint", str(ckpt), "--data", str(img),
                        "--out", str(out / "e.npz")], capture_output=True, text=True, timeout=300,
                       preexec_fn=small_files)
    assert r.returncode == 1 and "e.npz" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(out.iterdir()) == []       # no output, no temporary file left

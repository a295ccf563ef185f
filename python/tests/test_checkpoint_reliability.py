"""Checkpoints and training steps under hostile conditions: corrupt or forged files, steps
that fail half-way, saves that collide or are killed, a full disk, many calls, many threads.

Every case that once killed the interpreter runs in a subprocess, so a regression shows up
as a failed test instead of a dead test runner.
"""
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import zlib

import numpy as np
import pytest
from safetensors.numpy import save_file

import ace

TINY = dict(encoder="vit_nano", batch_size=2, epochs=2, steps_per_epoch=10, head_hidden=32,
            head_bottleneck=16, head_prototypes=64)
TINY_GRID = dict(image_size=128, grid_cells=8, fine_cells=2, input_size=32, min_overlap=1)


def tiny_config(**overrides):
    cfg = ace.PretrainConfig(**TINY, grid=ace.GridConfig(**TINY_GRID))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def batch(seed=0):
    return np.random.default_rng(seed).random((2, 150, 150), dtype=np.float32)


def split(path):
    """(header dict, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def load_in_subprocess(kind, path):
    """Loads a checkpoint in a fresh interpreter; returns (exit code, the error line)."""
    code = textwrap.dedent(f"""
        import sys, ace
        try:
            ace.{kind}.load({str(path)!r})
        except ace.ACEError as e:
            print("ACEError:", e); sys.exit(3)
        print("loaded")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "enc.safetensors"
    ace.Encoder("vit_nano", img_size=32).save(path)
    return path


@pytest.fixture(scope="module")
def trainer_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.safetensors"
    t = ace.Trainer(tiny_config())
    t.step(batch())
    t.save(path)
    return path


# ------------------------------------------------------------------ forged headers

def forged(tmp_path, source, edit):
    header, data = split(source)
    edit(header)
    path = tmp_path / "forged.safetensors"
    join(path, header, data)
    return path


def first_tensor(header):
    return next(k for k in sorted(header) if k != "__metadata__")


@pytest.mark.parametrize("kind", ["Encoder", "Trainer"])
def test_offsets_that_wrap_past_int64_are_refused(kind, encoder_file, trainer_file, tmp_path):
    def wrap(h):
        h[first_tensor(h)]["data_offsets"] = [2**63 - 4, 2**63 - 4 + 384 - 2**64]
    code, out = load_in_subprocess(kind, forged(tmp_path, trainer_file if kind == "Trainer" else encoder_file, wrap))
    assert code == 3 and "offsets" in out, out


def test_aliased_tensors_are_refused(encoder_file, tmp_path):
    def alias(h):
        names = [k for k in sorted(h) if k != "__metadata__" and h[k]["shape"] == [96]]
        h[names[1]]["data_offsets"] = h[names[0]]["data_offsets"]
    code, out = load_in_subprocess("Encoder", forged(tmp_path, encoder_file, alias))
    assert code == 3 and "overlap" in out, out


@pytest.mark.parametrize("field,value", [("embed_dim", 96_000_000), ("depth", 10_000_000), ("img_size", 1_600_000)])
def test_absurd_encoder_config_metadata_is_refused(field, value, encoder_file, tmp_path):
    def edit(h):
        cfg = json.loads(h["__metadata__"]["config"])
        cfg[field] = value
        h["__metadata__"]["config"] = json.dumps(cfg)
    code, out = load_in_subprocess("Encoder", forged(tmp_path, encoder_file, edit))
    assert code == 3 and field in out, out


@pytest.mark.parametrize("key,value,needle", [
    ("config", {"head_prototypes": 10**12}, "head_prototypes"),
    ("config", {"head_hidden": 2**62}, "head_hidden"),
    ("config", {"lr": "nan"}, "lr"),
    ("step", "-5", "step"),
    ("step", str(2**63 - 1), "step"),
    ("adam_t", "-1", "adam_t"),
    ("rng", "0,0,0,0", "generator"),
])
def test_forged_trainer_metadata_is_refused(key, value, needle, trainer_file, tmp_path):
    def edit(h):
        meta = h["__metadata__"]
        if key == "config":
            cfg = json.loads(meta["config"])
            cfg.update(value)
            meta["config"] = json.dumps(cfg)
        else:
            meta[key] = value
    code, out = load_in_subprocess("Trainer", forged(tmp_path, trainer_file, edit))
    assert code == 3 and needle in out, out


# ------------------------------------------------------------------ checksum

def test_checkpoints_carry_the_crc32_of_their_data(encoder_file, trainer_file):
    for path in (encoder_file, trainer_file):
        header, data = split(path)
        assert header["__metadata__"]["data_crc32"] == f"{zlib.crc32(data):08x}"


def test_a_flipped_data_bit_is_caught(encoder_file, tmp_path):
    raw = bytearray(encoder_file.read_bytes())
    raw[-4000] ^= 0x01
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(raw))
    with pytest.raises(ace.ACEError, match="CRC-32"):
        ace.Encoder.load(path)


def test_files_from_other_tools_load_without_a_checksum(tmp_path):
    enc = ace.Encoder("vit_nano", img_size=32, seed=3)
    path = tmp_path / "other.safetensors"
    save_file(enc.state_dict(), str(path), metadata={"format": "ace-encoder", "config": json.dumps(enc.config)})
    again = ace.Encoder.load(path)
    for k, v in enc.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)


# ------------------------------------------------------------------ transactional steps

def test_a_failed_step_leaves_the_run_exactly_as_it_was(tmp_path):
    # A student temperature this small overflows the gradient: the step must fail before
    # it commits anything, and say which settings to look at.
    t = ace.Trainer(tiny_config(student_temp=1e-38))
    before = tmp_path / "before.safetensors"
    t.save(before)
    with pytest.raises(ace.ACEError, match="student_temp"):
        t.step(batch())
    assert t.steps_done == 0
    after = tmp_path / "after.safetensors"
    t.save(after)
    assert after.read_bytes() == before.read_bytes()  # weights, moments, center, step and RNG
    ace.Trainer.load(after)


def test_a_rejected_batch_does_not_disturb_the_run():
    a, b = ace.Trainer(tiny_config()), ace.Trainer(tiny_config())
    bad = batch()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ace.ACEError, match="NaN"):
        a.step(bad)
    sa, sb = a.step(batch(1)), b.step(batch(1))
    assert sa == sb


# ------------------------------------------------------------------ writes

def test_concurrent_saves_to_one_path_never_collide(tmp_path):
    t = ace.Trainer(tiny_config())
    path = tmp_path / "run.safetensors"
    errors = []

    def save():
        try:
            for _ in range(5):
                t.save(path)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]
    ace.Trainer.load(path)


def test_a_full_disk_gives_a_clear_error_and_keeps_the_old_checkpoint(tmp_path):
    # RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk fails them with
    # ENOSPC: the save must raise naming the file, remove its temporary and keep the old file.
    path = tmp_path / "enc.safetensors"
    ace.Encoder("vit_nano", img_size=32).save(path)
    old = path.read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal, ace
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            ace.Encoder("vit_nano", img_size=32, seed=1).save({str(path)!r})
        except ace.ACEError as e:
            print(e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cannot write" in r.stdout and "enc.safetensors" in r.stdout and "File too large" in r.stdout, r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.safetensors"]
    assert path.read_bytes() == old


def test_a_writer_killed_mid_save_leaves_the_old_file_and_its_temporary_is_cleaned(tmp_path):
    path = tmp_path / "run.safetensors"
    ace.Trainer(tiny_config()).save(path)
    # A child saves a larger run in a loop; kill -9 lands during some write.
    code = textwrap.dedent(f"""
        import ace
        cfg = ace.PretrainConfig(encoder="vit_tiny", batch_size=2, head_prototypes=4096)
        t = ace.Trainer(cfg)
        print("ready", flush=True)
        while True:
            t.save({str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(200):  # until a temporary file exists, i.e. a write is under way
        if any(p.name.startswith(".run.safetensors.tmp-") for p in tmp_path.iterdir()):
            break
        threading.Event().wait(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Whatever the kill interrupted, the path holds a complete checkpoint (old or new).
    ace.Trainer.load(path)
    t = ace.Trainer(tiny_config())
    t.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]


# ------------------------------------------------------------------ many calls, many threads

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_memory_stays_flat_over_many_calls_and_failures(encoder_file, tmp_path):
    enc = ace.Encoder("vit_nano", img_size=32)
    x = np.zeros((2, 1, 32, 32), np.float32)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(encoder_file.read_bytes()[:-10])

    def work(n):
        for _ in range(n):
            enc.forward_features(x)
            with pytest.raises(ace.ACEError):
                enc.forward_features(np.full_like(x, np.nan))
            with pytest.raises(ace.ACEError):
                ace.Encoder.load(bad)

    work(200)  # warm up the workspaces and allocator
    start = rss_mib()
    work(2000)
    assert rss_mib() - start < 20


def test_four_threads_on_one_encoder_give_serial_results():
    enc = ace.Encoder("vit_nano", img_size=32, seed=2)
    inputs = [np.random.default_rng(i).standard_normal((2, 1, 32, 32)).astype(np.float32) for i in range(4)]
    expected = [enc.forward_features(x) for x in inputs]
    results, errors = {}, []

    def run(i):
        try:
            for _ in range(25):
                out = enc.forward_features(inputs[i])
                if not np.array_equal(out, expected[i]):
                    results[i] = out
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def retune():
        for n in [1, 2, 1, 2] * 10:
            ace.set_num_threads(n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)] + [threading.Thread(target=retune)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ace.set_num_threads(2)
    assert not errors and not results

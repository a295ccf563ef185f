"""`ace export CKPT --out DIR`: a timm model folder (model.safetensors + config.json), checked
with the safetensors package and, where PyTorch and timm are installed, with timm itself."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import ace
from conftest import run_ace

# An interpreter with PyTorch and timm (never dependencies of this package).
TORCH_PYTHON = Path(os.environ.get("ACE_TORCH_PYTHON", "/opt/torchenv/bin/python"))
# Runs the commands `ace export` prints, as a user would paste them, and saves what the
# models compute.
TIMM_SCRIPT = """
import sys
try:
    import numpy as np, torch, timm
except ImportError:
    sys.exit(3)
x = torch.from_numpy(np.load(sys.argv[1]))
results = {}
for i, command in enumerate(sys.argv[3:]):
    model = eval(command).eval()
    with torch.no_grad():
        results[f"features{i}"] = model.forward_features(x).numpy()
        results[f"pooled{i}"] = model(x).numpy()
np.savez(sys.argv[2], **results)
"""


@pytest.fixture(scope="module")
def run(configured_run):
    """A training checkpoint of vit_nano after 4 steps (student and teacher differ)."""
    return configured_run / "a" / "last.safetensors"


def export(checkpoint, out, *args):
    """The timm.create_model lines the command prints."""
    result = run_ace("export", checkpoint, "--out", out, *args)
    return [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("timm.create_model(")]


@pytest.fixture(scope="module")
def exports(run, tmp_path_factory):
    """{which: (folder, printed commands)}: the default export (the teacher) and the student's."""
    folder = tmp_path_factory.mktemp("exports")
    return {"teacher": (folder / "default", export(run, folder / "default")),
            "student": (folder / "student", export(run, folder / "student", "--which", "student"))}


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_export_writes_the_chosen_encoder_in_timm_layout(run, exports, which):
    folder, _ = exports[which]
    trainer = ace.Trainer.load(run)
    expected = getattr(trainer, which).state_dict()
    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors.keys() == expected.keys()
    assert all(np.array_equal(tensors[k], expected[k]) for k in expected)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 0
    sizes = {"embed_dim": 96, "depth": 4, "num_heads": 3, "in_chans": 1, "img_size": 224}
    assert config["model_args"].items() >= sizes.items()
    assert config["pretrained_cfg"]["input_size"] == [1, 224, 224]
    assert config["pretrained_cfg"]["mean"] == [pytest.approx(trainer.config.mean)]
    assert config["ace"]["which"] == which


def test_teacher_and_student_differ(exports):
    teacher = load_file(str(exports["teacher"][0] / "model.safetensors"))
    student = load_file(str(exports["student"][0] / "model.safetensors"))
    assert any(not np.array_equal(teacher[k], student[k]) for k in teacher)


def test_export_refuses_what_it_cannot_do(run, tmp_path):
    encoder_file = tmp_path / "enc.safetensors"
    ace.Encoder("vit_nano").save(encoder_file)
    r = run_ace("export", encoder_file, "--out", tmp_path / "x", "--which", "student", check=False)
    assert r.returncode == 1 and "is an encoder file" in r.stderr
    r = run_ace("export", tmp_path / "missing.safetensors", "--out", tmp_path / "x", check=False)
    assert r.returncode == 1 and "no checkpoint file" in r.stderr


@pytest.mark.skipif(not TORCH_PYTHON.exists(), reason=f"no interpreter with PyTorch and timm at {TORCH_PYTHON} "
                                                     "(set ACE_TORCH_PYTHON)")
def test_timm_loads_the_export_and_computes_the_same_features(run, exports, tmp_path):
    _, commands = exports["teacher"]
    assert len(commands) == 2          # timm's local-dir loader, and create_model with a file overlay
    x = np.random.default_rng(0).standard_normal((2, 1, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([str(TORCH_PYTHON), "-c", TIMM_SCRIPT, tmp_path / "x.npy", tmp_path / "out.npz",
                             *commands], capture_output=True, text=True, timeout=600)
    if result.returncode == 3:
        pytest.skip(f"{TORCH_PYTHON} cannot import torch and timm")
    assert result.returncode == 0, result.stderr
    timm_out = np.load(tmp_path / "out.npz")

    enc = ace.Encoder.load(run)
    enc.precision = "fp32"
    ours = enc.forward_features(x)
    for i in range(2):
        np.testing.assert_allclose(timm_out[f"features{i}"], ours, atol=1e-4, rtol=0)
        # The pooled output is ACE's image embedding: the mean of the patch tokens.
        np.testing.assert_allclose(timm_out[f"pooled{i}"], ours[:, 1:].mean(axis=1), atol=1e-4, rtol=0)

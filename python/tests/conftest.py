"""Shared test settings: where the real JSRT data lives, and helpers to run the `ace` command.

Set ACE_JSRT to a JSRT folder (images/, masks/, split.json, landmarks_dev.csv) to run the
tests on real radiographs; the default is ../shared/data/jsrt beside the repository. Tests
that need it are skipped, naming the variable, when it is not there.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
JSRT = Path(os.environ.get("ACE_JSRT") or REPOSITORY.parent / "shared" / "data" / "jsrt").expanduser().absolute()
JSRT_IMAGES = JSRT / "images"
JSRT_MISSING = f"JSRT data not found at {JSRT} (no images/ folder): set ACE_JSRT to the JSRT folder"
needs_jsrt = pytest.mark.skipif(not JSRT_IMAGES.is_dir(), reason=JSRT_MISSING)


def run_ace(*args, check=True):
    """The `ace` command in a subprocess, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "ace", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory):
    """A folder of six small phantom radiographs (PNG): fast to read and to train a few steps on."""
    from PIL import Image

    from ace.data import phantom

    folder = tmp_path_factory.mktemp("tiny_images")
    images, _ = phantom.batch(range(6), size=256)
    for i, image in enumerate(images):
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


# Written with the spellings users reach for: an option's name (preset), a float without a
# dot (1e-3), nested groups, an objective shorthand.
RUN_YAML = """\
preset: vit_nano
objective: comp+decomp
steps: 3
batch_size: 2
lr: 1e-3
seed: 1
threads: 1
precision: fp32
checkpoint_every: 2
head_prototypes: 64
grid:
  window: 5
augment: {clahe_p: 0.3}
"""


@pytest.fixture(scope="session")
def configured_run(tmp_path_factory, tiny_images):
    """A short run from run.yaml, --set overrides and options (test_pretrain_config.py checks them):
    FOLDER/a/ is its output."""
    folder = tmp_path_factory.mktemp("configured")
    (folder / "run.yaml").write_text(f"data: {tiny_images}\n" + RUN_YAML)
    # --set overrides the file; an option overrides both.
    run_ace("pretrain", "--config", folder / "run.yaml", "--set", "seed=7", "grid.window=3", "alpha_comp=0.8",
            "--set", "steps=4", "--batch-size", "2", "--out", folder / "a")
    return folder

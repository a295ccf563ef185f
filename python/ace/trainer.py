"""`ace.Trainer`: a pretraining run whose every step runs in the Swift core."""
import json
import os

import numpy as np

from . import _native
from .config import PretrainConfig
from .encoder import Encoder, checkpoint_metadata
from .errors import ACEError
from .preprocess import to_channels, to_unit_float
from .validate import UINT64_MAX, require_int, require_path

# The names of the values a step reports, as the core lists them.
STAT_NAMES = _native.STAT_NAMES


class Trainer:
    """ACE (or DINO-baseline) pretraining: student, EMA teacher, heads, AdamW, schedules.

    `step(images)` takes a batch of radiographs (B, H, W), or of colour images (B, H, W, 3)
    (R, G, B, channels last, as `Encoder.embed`), as uint8, uint16 or floats in [0, 1]; grey
    images are repeated for a colour run (in_chans 3), colour ones become luma for a grey run.
    The core resizes, crops, augments, and runs one update. One thread at a time.

    `run_state` (None or a JSON-serializable dict) is the driver's own state of the run, e.g.
    `ace pretrain`'s data, seed and length: `save` stores it in the checkpoint and `load`
    restores it, so one file resumes a run.
    """

    def __init__(self, config=None, *, seed=0):
        if config is None:
            config = PretrainConfig()
        if not isinstance(config, PretrainConfig):
            raise ACEError(f"config must be an ace.PretrainConfig, got {type(config).__name__}")
        self._native = _native.Trainer(config.to_json(), require_int("seed", seed, 0, UINT64_MAX))
        self._init_common(PretrainConfig.from_json(config.to_json()))
        self.run_state = None

    @classmethod
    def load(cls, path):
        """Resume a run saved with `save`: weights, optimizer, schedule position and RNG."""
        path = require_path("path", path)
        if not os.path.isfile(path):
            raise ACEError(f"no checkpoint file at {path}")
        t = cls.__new__(cls)
        t._native = _native.load_trainer(path)
        # The core stores single-precision values: the loaded config shows them as such.
        t._init_common(PretrainConfig.from_json(t._native.config_json()))
        saved = checkpoint_metadata(path).get("run")
        try:
            t.run_state = None if saved is None else json.loads(saved)
        except json.JSONDecodeError as e:
            raise ACEError(f"{path}: damaged run state in the metadata ({e})") from None
        return t

    def _init_common(self, config):
        self.config = config
        mean, std, fov = self.config.mean, self.config.std, self.config.fov_mask
        features = "cls" if config.objective == "dino" else "mean"
        self.student = Encoder._wrap(self._native.encoder(0), mean, std, features, fov)
        self.teacher = Encoder._wrap(self._native.encoder(1), mean, std, features, fov)

    @property
    def precision(self):
        """The precision the run's products use ("bf16" or "fp32"), resolved from
        `config.precision` on this machine."""
        return self.student.precision

    @property
    def steps_done(self):
        """Optimizer steps taken so far (restored by `load`)."""
        return self._native.steps()

    def save(self, path):
        """Write the whole run (and `run_state`) to one safetensors file, atomically."""
        try:
            state = None if self.run_state is None else json.dumps(self.run_state, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ACEError(f"run_state must be a JSON-serializable dict: {e}") from None
        self._native.save(require_path("path", path), state)

    def step(self, images):
        """One update on a batch; returns a dict of the loss terms and schedule values."""
        return _stats(self._native.step(_batch(images, self.config.in_chans)))

    # A step in two halves, for data-parallel training (ace.distributed): between them the
    # gradients and the center statistic may be averaged across processes in place.

    def compute_gradients(self, images, *, first_image=0):
        """Views, forward, losses and backward for this batch into `gradients` and
        `center_statistic`; nothing else changes. `first_image` is the global position of
        images[0] in the step's batch (the key of each image's crop, augmentation and drop
        path draws). Returns the loss terms of this batch."""
        first = require_int("first_image", first_image, 0, 2**40)
        return _stats(self._native.compute_gradients(_batch(images, self.config.in_chans), first))

    def apply_gradients(self):
        """Clip, AdamW, EMA teacher and center from the buffers as they are now; returns the
        step's stats (loss terms from `compute_gradients`)."""
        return _stats(self._native.apply_gradients())

    @property
    def gradients(self):
        """Every trainable gradient, one contiguous writable float32 array over the core's
        memory (no copy; it keeps the run alive)."""
        return self._native.buffer(0)

    @property
    def center_statistic(self):
        """The batch mean of the teacher head's logits that `apply_gradients` moves the DINO
        center toward (writable float32 array over the core's memory)."""
        return self._native.buffer(1)


def _batch(images, in_chans):
    """(B, H, W) or (B, H, W, C) images -> float32 (B, in_chans, H, W), the core's layout."""
    x = np.asarray(images)
    if x.ndim not in (3, 4):
        raise ACEError(f"images must be (B, H, W) or (B, H, W, C), got shape {x.shape}")
    return to_channels(to_unit_float(x), in_chans)


def _stats(stats):
    stats["step"] = int(stats["step"])
    return stats

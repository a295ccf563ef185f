"""`ace.Trainer`: a pretraining run whose every step runs in the Swift core."""
import os

import numpy as np

from . import _native
from .config import PretrainConfig
from .encoder import Encoder
from .errors import ACEError
from .preprocess import to_channels, to_unit_float
from .validate import UINT64_MAX, require_int, require_path

STAT_NAMES = ("loss", "global", "comp", "decomp", "lr", "wd", "momentum", "grad_norm", "step",
              "comp_acc", "decomp_acc")


class Trainer:
    """ACE (or DINO-baseline) pretraining: student, EMA teacher, heads, AdamW, schedules.

    `step(images)` takes a batch of radiographs (B, H, W) as uint8, uint16 or floats in
    [0, 1]; the core resizes, crops, augments, and runs one update. One thread at a time.
    """

    def __init__(self, config=None, *, seed=0):
        if config is None:
            config = PretrainConfig()
        if not isinstance(config, PretrainConfig):
            raise ACEError(f"config must be an ace.PretrainConfig, got {type(config).__name__}")
        self._native = _native.Trainer(config.to_json(), require_int("seed", seed, 0, UINT64_MAX))
        self._init_common(PretrainConfig.from_json(config.to_json()))

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
        return t

    def _init_common(self, config):
        self.config = config
        mean, std = self.config.mean, self.config.std
        features = "cls" if config.objective == "dino" else "mean"
        self.student = Encoder._wrap(self._native.encoder(0), mean, std, features)
        self.teacher = Encoder._wrap(self._native.encoder(1), mean, std, features)

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
        """Write the whole run to one safetensors file, atomically."""
        self._native.save(require_path("path", path))

    def step(self, images):
        """One update on a batch; returns a dict of the loss terms and schedule values."""
        x = np.asarray(images)
        if x.ndim == 4:
            x = to_channels(to_unit_float(x), 1)[:, 0]
        elif x.ndim == 3:
            x = to_unit_float(x)
        else:
            raise ACEError(f"images must be (B, H, W), got shape {x.shape}")
        values = self._native.step(np.ascontiguousarray(x, dtype=np.float32))
        stats = dict(zip(STAT_NAMES, values))
        stats["step"] = int(stats["step"])
        return stats

"""`ace.PretrainConfig`: every setting of a pretraining run (DESIGN.md section 5).

Defaults are the CPU-scale mirror of the paper (paper values in comments). The config is a
plain dataclass with a JSON round trip; the Swift core receives exactly this JSON.
"""
import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from .errors import ACEError
from .validate import FLOAT32_MAX, INT32_MAX, require_choice, require_float, require_int

PRESETS = ("vit_nano", "vit_tiny", "vit_small", "vit_base")
# Swin Transformer encoders (timm's swin_*_patch4_window7); not yet trainable by ACE pretraining.
SWIN_PRESETS = ("swin_nano", "swin_tiny", "swin_small", "swin_base")
LOSSES = ("global", "comp", "decomp")
# Largest run, in optimizer steps (epochs x steps_per_epoch), as in the core.
MAX_STEPS = 2**40
# Allowed values of the string settings.
_CHOICES = {"encoder": PRESETS, "objective": ("ace", "dino"), "clip_mode": ("per_tensor", "global"),
            "precision": ("auto", "bf16", "fp32"), "local_head": ("mlp", "authors")}
# Integer settings for which 0 is meaningful; every other one must be at least 1.
_ZERO_ALLOWED = {"local_hidden", "freeze_last_layer_epochs", "decomp_window"}


@dataclass
class GridConfig:
    image_size: int = 512        # images are resized to this square first [1024]
    grid_cells: int = 32         # cells per side; a cell is image_size / grid_cells px [32 px]
    fine_cells: int = 14         # C1 covers n x n cells, C2 2n x 2n [448 / 896 px]
    input_size: int = 224        # both views are resized to this [448]
    min_overlap: int = 4         # minimum overlap of the views, in C2 tokens per axis
    window: int = 3              # k x k target window
    sigma: float = 1.0           # Gaussian sigma of the target, in token units
    decomp_window: int = 0       # decomposition target window; 0 = window [authors' code: 5]


@dataclass
class AugmentConfig:
    brightness_contrast_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    blur_p: float = 0.5
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    sharpen_p: float = 0.3
    sharpen_amount: float = 1.0
    gamma_p: float = 0.0
    gamma_min: float = 0.7
    gamma_max: float = 1.5
    clahe_p: float = 0.0         # CLAHE probability [authors' code: 0.3]
    clahe_clip: float = 4.0      # its clip limit (times the mean bin count)
    clahe_tiles: float = 8.0     # its regions per side


@dataclass
class PretrainConfig:
    # networks
    encoder: str = "vit_tiny"
    in_chans: int = 1
    drop_path: float = 0.1
    local_hidden: int = 0             # composer/decomposer hidden width, 0 = 4C (C for "authors")
    local_head: str = "mlp"           # "mlp": Linear-GELU-Linear [paper]; "authors": Linear-LayerNorm-ReLU-Linear
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_prototypes: int = 8192       # K [65536]
    precision: str = "auto"           # matrix products: "auto" (bf16 where the CPU has it), "bf16", "fp32"
    # objective: "ace" with any subset of the losses (ablations), or "dino" (global loss on
    # two random-resized crops, no grid): the baseline
    objective: str = "ace"
    losses: list = field(default_factory=lambda: ["global", "comp", "decomp"])
    global_weight: float = 0.1
    comp_weight: float = 1.0
    decomp_weight: float = 1.0
    alpha_comp: float = 0.9
    alpha_decomp: float = 0.99
    logit_scale: float = 1 / 0.07
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    # optimization
    batch_size: int = 16
    epochs: int = 50
    steps_per_epoch: int = 100        # set from the data set size by the CLI
    lr: float = 5e-4                  # per 256 images: the step's lr is lr * batch_size / 256
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1      # of all steps [10 epochs]
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 0.8
    clip_mode: str = "per_tensor"     # or "global"
    freeze_last_layer_epochs: int = 1
    weight_decay_tokens: bool = False  # also decay cls_token / pos_embed [DINO's parameter groups]
    # data
    grid: GridConfig = field(default_factory=GridConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: float = 0.757               # intensity statistics of the JSRT radiographs
    std: float = 0.200
    dino_scale_min: float = 0.4
    dino_scale_max: float = 1.0
    pre_crop_scale_min: float = 1.0   # random-resized crop before gridding; 1 = off [authors' code: 0.85]

    def __post_init__(self):
        # grid and augment may be given as dicts of their fields.
        self.grid = _nested("grid", self.grid, GridConfig)
        self.augment = _nested("augment", self.augment, AugmentConfig)

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def validate(self):
        """Check the type and finiteness of every setting (ranges that depend on each other
        are checked by the core) and store each as the plain type the core reads. Raises
        ACEError naming the first bad field; returns self. `to_json` calls it."""
        self.__post_init__()
        _check_fields(self)
        _check_fields(self.grid, "grid.")
        _check_fields(self.augment, "augment.")
        if not isinstance(self.losses, (list, tuple)) or not self.losses \
                or not all(isinstance(x, str) and x in LOSSES for x in self.losses):
            raise ACEError(f"losses must be a non-empty list of {', '.join(LOSSES)}; got {self.losses!r}")
        self.losses = list(self.losses)
        if self.epochs * self.steps_per_epoch > MAX_STEPS:
            raise ACEError(f"epochs x steps_per_epoch ({self.epochs} x {self.steps_per_epoch}) exceeds "
                           f"the limit of {MAX_STEPS} steps")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.validate().to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ACEError(f"a PretrainConfig is read from a dict (a JSON object) of its fields, "
                           f"got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ACEError(f"unknown PretrainConfig fields: {unknown}")
        return cls(**d).validate()

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    @classmethod
    def recipe(cls, name, **overrides):
        """A named recipe, then `overrides` (fields; grid / augment as dicts of their fields):

        - "paper": the paper's settings at CPU scale (the defaults);
        - "authors": the authors' released code where it departs from the paper (their master
          branch): decomposition target window 5, CLAHE p 0.3, a random-resized pre-crop
          (scale 0.85-1) before gridding, Linear(no bias)-LayerNorm-ReLU-Linear local heads of
          width C, loss 0.1 global + (comp + decomp) / 2, weight decay on cls_token/pos_embed.
        """
        if name not in RECIPES:
            raise ACEError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
        fields = json.loads(json.dumps(RECIPES[name]))  # a deep copy
        for key, value in overrides.items():
            if key in ("grid", "augment") and isinstance(value, dict):
                fields.setdefault(key, {}).update(value)
            else:
                fields[key] = value
        return cls.from_dict(fields)


RECIPES = {
    "paper": {},
    "authors": {
        "grid": {"decomp_window": 5},
        "augment": {"clahe_p": 0.3},
        "pre_crop_scale_min": 0.85,
        "local_head": "authors",
        "global_weight": 0.1, "comp_weight": 0.5, "decomp_weight": 0.5,
        "weight_decay_tokens": True,
    },
}


def _nested(key, value, cls):
    """A GridConfig / AugmentConfig from itself or from a dict of its fields."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ACEError(f"{key} must be an ace.{cls.__name__} or a dict of its fields, got {type(value).__name__}")
    unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ACEError(f"unknown {key} fields: {unknown}")
    return cls(**value)


def _check_fields(config, prefix=""):
    """Check the int, float and str fields of a config dataclass by their declared type and
    store them back as plain Python values (a NumPy scalar would not survive json.dumps)."""
    for f in dataclasses.fields(config):
        name, value = prefix + f.name, getattr(config, f.name)
        if f.type is int:
            value = require_int(name, value, 0 if f.name in _ZERO_ALLOWED else 1, INT32_MAX)
        elif f.type is float:
            value = require_float(name, value, -FLOAT32_MAX, FLOAT32_MAX)
        elif f.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ACEError(f"{name} must be true or false, got {value!r}")
            value = bool(value)
        elif f.type is str:
            value = require_choice(name, value, _CHOICES[f.name],
                                   "a preset:" if f.name == "encoder" else "one of")
        else:
            continue
        setattr(config, f.name, value)

"""`ace.PretrainConfig`: every setting of a pretraining run (DESIGN.md section 5).

The fields are declared here with their types (paper values in comments); their defaults,
the CPU-scale mirror of the paper, come from the core, which owns the only copy of them
(Sources/ACE/PretrainConfig.swift). The config is a plain dataclass with a JSON round trip;
the Swift core receives exactly this JSON.
"""
import copy
import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from . import _native
from .errors import ACEError
from .validate import FLOAT32_MAX, INT32_MAX, require_choice, require_float, require_int

# Encoder presets, as the core lists them: ViTs and Swin Transformers (timm's
# swin_*_patch4_window7), both trainable by ACE pretraining.
PRESET_SHAPES = json.loads(_native.presets())   # name -> embed_dim, depth(s), num_heads
PRESETS = tuple(PRESET_SHAPES)
VIT_PRESETS = tuple(p for p in PRESETS if p.startswith("vit"))
SWIN_PRESETS = tuple(p for p in PRESETS if p.startswith("swin"))
# What a Swin encoder changes in a run (views whose 8 x 8 final tokens are one 32-px cell each,
# windows of 8), as the core defines it; `recipe` lays it under the given settings.
SWIN_GEOMETRY = json.loads(_native.swin_geometry())
LOSSES = ("global", "comp", "decomp")
_CORE_DEFAULTS = json.loads(_native.pretrain_config_defaults())


def _default(path, kind):
    """The core's default of a setting ("grid.window"), as the field's type (or converter)."""
    value = _CORE_DEFAULTS
    for key in path.split("."):
        value = value[key]
    if kind is list:
        return field(default_factory=lambda: copy.deepcopy(value))
    return kind(value)
def _channel_values(value):
    return list(value) if isinstance(value, list) else float(value)


# Largest run, in optimizer steps (epochs x steps_per_epoch), as in the core.
MAX_STEPS = 2**40
# Allowed values of the string settings.
_CHOICES = {"encoder": PRESETS, "objective": ("ace", "dino"), "clip_mode": ("per_tensor", "global"),
            "precision": ("auto", "bf16", "fp32"), "local_head": ("mlp", "authors")}
# Integer settings for which 0 is meaningful; every other one must be at least 1.
_ZERO_ALLOWED = {"local_hidden", "freeze_last_layer_epochs", "decomp_window"}


@dataclass
class GridConfig:
    image_size: int = _default("grid.image_size", int)  # images are resized to this square first [1024]
    # cells per side; a cell is image_size / grid_cells px [32 px]
    grid_cells: int = _default("grid.grid_cells", int)
    fine_cells: int = _default("grid.fine_cells", int)  # C1 covers n x n cells, C2 2n x 2n [448 / 896 px]
    input_size: int = _default("grid.input_size", int)  # both views are resized to this [448]
    # minimum overlap of the views, in C2 tokens per axis
    min_overlap: int = _default("grid.min_overlap", int)
    window: int = _default("grid.window", int)  # k x k target window
    sigma: float = _default("grid.sigma", float)  # Gaussian sigma of the target, in token units
    # decomposition target window; 0 = window [authors' code: 5]
    decomp_window: int = _default("grid.decomp_window", int)


@dataclass
class AugmentConfig:
    brightness_contrast_p: float = _default("augment.brightness_contrast_p", float)
    brightness: float = _default("augment.brightness", float)
    contrast: float = _default("augment.contrast", float)
    blur_p: float = _default("augment.blur_p", float)
    blur_sigma_min: float = _default("augment.blur_sigma_min", float)
    blur_sigma_max: float = _default("augment.blur_sigma_max", float)
    sharpen_p: float = _default("augment.sharpen_p", float)
    sharpen_amount: float = _default("augment.sharpen_amount", float)
    gamma_p: float = _default("augment.gamma_p", float)
    gamma_min: float = _default("augment.gamma_min", float)
    gamma_max: float = _default("augment.gamma_max", float)
    clahe_p: float = _default("augment.clahe_p", float)  # CLAHE probability [authors' code: 0.3]
    clahe_clip: float = _default("augment.clahe_clip", float)  # its clip limit (times the mean bin count)
    clahe_tiles: float = _default("augment.clahe_tiles", float)  # its regions per side
    # colour images only (in_chans 3): torchvision's ColorJitter as DINO applies it [p 0.8,
    # 0.4 / 0.4 / 0.2 / 0.1], then RandomGrayscale [p 0.2]
    color_jitter_p: float = _default("augment.color_jitter_p", float)
    jitter_brightness: float = _default("augment.jitter_brightness", float)
    jitter_contrast: float = _default("augment.jitter_contrast", float)
    jitter_saturation: float = _default("augment.jitter_saturation", float)
    jitter_hue: float = _default("augment.jitter_hue", float)  # turns of the colour wheel
    grayscale_p: float = _default("augment.grayscale_p", float)


@dataclass
class PretrainConfig:
    # networks
    encoder: str = _default("encoder", str)
    in_chans: int = _default("in_chans", int)
    window_size: int = _default("window_size", int)  # Swin encoders' attention window [7]
    drop_path: float = _default("drop_path", float)
    # composer/decomposer hidden width, 0 = 4C (C for "authors")
    local_hidden: int = _default("local_hidden", int)
    # "mlp": Linear-GELU-Linear [paper]; "authors": Linear-LayerNorm-ReLU-Linear
    local_head: str = _default("local_head", str)
    head_hidden: int = _default("head_hidden", int)
    head_bottleneck: int = _default("head_bottleneck", int)
    head_prototypes: int = _default("head_prototypes", int)  # K [65536]
    # matrix products: "auto" (bf16 where the CPU has it), "bf16", "fp32"
    precision: str = _default("precision", str)
    # objective: "ace" with any subset of the losses (ablations), or "dino" (global loss on
    # two random-resized crops, no grid): the baseline
    objective: str = _default("objective", str)
    losses: list = _default("losses", list)
    global_weight: float = _default("global_weight", float)
    comp_weight: float = _default("comp_weight", float)
    decomp_weight: float = _default("decomp_weight", float)
    alpha_comp: float = _default("alpha_comp", float)
    alpha_decomp: float = _default("alpha_decomp", float)
    logit_scale: float = _default("logit_scale", float)
    student_temp: float = _default("student_temp", float)
    teacher_temp: float = _default("teacher_temp", float)
    center_momentum: float = _default("center_momentum", float)
    # optimization
    batch_size: int = _default("batch_size", int)
    epochs: int = _default("epochs", int)
    steps_per_epoch: int = _default("steps_per_epoch", int)  # set from the data set size by the CLI
    lr: float = _default("lr", float)  # per 256 images: the step's lr is lr * batch_size / 256
    min_lr: float = _default("min_lr", float)
    warmup_fraction: float = _default("warmup_fraction", float)  # of all steps [10 epochs]
    weight_decay: float = _default("weight_decay", float)
    weight_decay_end: float = _default("weight_decay_end", float)
    momentum_teacher: float = _default("momentum_teacher", float)
    clip_grad: float = _default("clip_grad", float)
    clip_mode: str = _default("clip_mode", str)  # or "global"
    freeze_last_layer_epochs: int = _default("freeze_last_layer_epochs", int)
    # also decay cls_token / pos_embed [DINO's parameter groups]
    weight_decay_tokens: bool = _default("weight_decay_tokens", bool)
    # data
    grid: GridConfig = field(default_factory=GridConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # intensity statistics of the views: one number (the JSRT radiographs' by default) or one
    # per channel (R, G, B)
    mean: "channels" = _default("mean", _channel_values)
    std: "channels" = _default("std", _channel_values)
    # zero the pixels outside the field of view inscribed in the image (colour fundus photographs)
    fov_mask: bool = _default("fov_mask", bool)
    dino_scale_min: float = _default("dino_scale_min", float)
    dino_scale_max: float = _default("dino_scale_max", float)
    # random-resized crop before gridding; 1 = off [authors' code: 0.85]
    pre_crop_scale_min: float = _default("pre_crop_scale_min", float)

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
        """The config of the fields in `d`; the others keep their defaults, except that a Swin
        encoder (`"encoder": "swin_tiny"`) first takes the Swin view geometry (SWIN_GEOMETRY)."""
        if not isinstance(d, dict):
            raise ACEError(f"a PretrainConfig is read from a dict (a JSON object) of its fields, "
                           f"got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ACEError(f"unknown PretrainConfig fields: {unknown}")
        if d.get("encoder") in SWIN_PRESETS:
            # A Swin's final tokens are 32 px: its view geometry, under what `d` gives.
            d = layer_settings([SWIN_GEOMETRY, d])
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
        fields = layer_settings([RECIPES[name], overrides])
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


def layer_settings(layers):
    """Settings dicts merged in order, later ones winning; grid / augment dicts merge field by
    field. The layers are not changed."""
    fields = {}
    for layer in layers:
        for key, value in copy.deepcopy(layer).items():
            if key in ("grid", "augment") and isinstance(value, dict) and isinstance(fields.get(key), dict):
                fields[key].update(value)
            else:
                fields[key] = value
    return fields


# Settings per imaging modality (`ace pretrain --modality`), applied after the recipe and
# before the user's own settings.
MODALITIES = {
    "xray": {},
    # Colour fundus photographs (EyePACS-like): RGB; per-channel statistics of a red-dominated
    # disc on a black border (R brightest, B darkest), measured on 32 procedural fundus phantoms
    # over the whole image, border included, as the views contain it (set `mean`/`std` from
    # your own data for real photographs); DINO's colour jitter and random grayscale instead of
    # the grey brightness/contrast; no CLAHE; the circular field of view masked.
    "fundus": {
        "in_chans": 3,
        "mean": [0.431, 0.202, 0.092],
        "std": [0.307, 0.147, 0.072],
        "fov_mask": True,
        "augment": {"brightness_contrast_p": 0.0, "clahe_p": 0.0, "color_jitter_p": 0.8, "grayscale_p": 0.2},
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


def _require_channel_values(name, value, positive):
    """A number, or a list of 1 or 3 numbers (the core checks the count against in_chans)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [require_float(f"{name}[{i}]", v, -FLOAT32_MAX, FLOAT32_MAX) for i, v in enumerate(value)]
        if len(values) not in (1, 3):
            raise ACEError(f"{name} must be one number or one per channel (3 for R, G, B), got {len(values)} values")
        if positive and min(values) <= 0:
            raise ACEError(f"{name} must be positive, got {values}")
        return values
    value = require_float(name, value, -FLOAT32_MAX, FLOAT32_MAX)
    if positive and value <= 0:
        raise ACEError(f"{name} must be positive, got {value}")
    return value


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
        elif f.type == "channels":
            value = _require_channel_values(name, value, positive=f.name == "std")
        elif f.type is str:
            value = require_choice(name, value, _CHOICES[f.name],
                                   "a preset:" if f.name == "encoder" else "one of")
        else:
            continue
        setattr(config, f.name, value)

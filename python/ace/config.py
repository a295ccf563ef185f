"""`ace.PretrainConfig`: every setting of a pretraining run (DESIGN.md section 5).

Defaults are the CPU-scale mirror of the paper (paper values in comments). The config is a
plain dataclass with a JSON round trip; the Swift core receives exactly this JSON.
"""
import dataclasses
import json
from dataclasses import dataclass, field

from .errors import ACEError


@dataclass
class GridConfig:
    image_size: int = 512        # images are resized to this square first [1024]
    grid_cells: int = 32         # cells per side; a cell is image_size / grid_cells px [32 px]
    fine_cells: int = 14         # C1 covers n x n cells, C2 2n x 2n [448 / 896 px]
    input_size: int = 224        # both views are resized to this [448]
    min_overlap: int = 4         # minimum overlap of the views, in C2 tokens per axis
    window: int = 3              # k x k target window
    sigma: float = 1.0           # Gaussian sigma of the target, in token units


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


@dataclass
class PretrainConfig:
    # networks
    encoder: str = "vit_tiny"
    in_chans: int = 1
    drop_path: float = 0.1
    local_hidden: int = 0             # composer/decomposer hidden width, 0 = 4C
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_prototypes: int = 8192       # K [65536]
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
    # data
    grid: GridConfig = field(default_factory=GridConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: float = 0.757               # intensity statistics of the JSRT radiographs
    std: float = 0.200
    dino_scale_min: float = 0.4
    dino_scale_max: float = 1.0

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ACEError(f"unknown PretrainConfig fields: {unknown}")
        for key, sub in (("grid", GridConfig), ("augment", AugmentConfig)):
            if key in d and isinstance(d[key], dict):
                sub_names = {f.name for f in dataclasses.fields(sub)}
                bad = sorted(set(d[key]) - sub_names)
                if bad:
                    raise ACEError(f"unknown {key} fields: {bad}")
                d[key] = sub(**d[key])
        return cls(**d)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

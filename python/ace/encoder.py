"""`ace.Encoder`: a Vision Transformer or Swin Transformer whose numerics run in the Swift core."""
import json
import os

import numpy as np

from . import _native
from .config import PRESETS, SWIN_PRESETS
from .errors import ACEError
from .preprocess import (JSRT_MEAN, JSRT_STD, apply_fov_mask, channel_stats, check_image_size, resize, to_channels,
                         to_unit_float)
from .validate import (INT32_MAX, UINT64_MAX, require_choice, require_float, require_int, require_path,
                       require_real_array)


class Encoder:
    """A timm-compatible ViT (patch 16, class token, learned position embedding) or Swin
    Transformer (presets `swin_*`: patch 4, window 7, no class token; the image embedding is
    the mean of the final tokens).

    Parameters follow timm's names, so `state_dict()` loads into
    `timm.create_model("vit_tiny_patch16_224", in_chans=1, num_classes=0)`,
    `timm.create_model("swin_tiny_patch4_window7_224", in_chans=1, num_classes=0)` and the like.
    One encoder is used by one thread at a time; concurrent calls wait for each other.
    """

    def __init__(self, preset="vit_tiny", *, in_chans=1, img_size=224, drop_path=0.0, seed=0,
                 mean=JSRT_MEAN, std=JSRT_STD, precision="auto", window_size=None, fov_mask=False):
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ACEError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        # Types and int32/uint64 bounds here; the core checks the ranges (in_chans 1 or 3,
        # img_size a multiple of the patch up to its limit, drop_path in [0, 1)).
        args = (require_int("in_chans", in_chans, 1, INT32_MAX), require_int("img_size", img_size, 1, INT32_MAX),
                require_float("drop_path", drop_path), require_int("seed", seed, 0, UINT64_MAX))
        if window_size is None:
            self._native = _native.Encoder(preset, *args)
        elif preset not in SWIN_PRESETS:
            raise ACEError(f"window_size applies to Swin presets ({', '.join(SWIN_PRESETS)}), not {preset!r}")
        else:
            # A Swin of another window (e.g. 256 px input with window 8: an 8x8 final grid): the
            # preset's config at timm's geometry, then the chosen one, validated by the core.
            config = json.loads(_native.Encoder(preset, args[0], 224, args[2], args[3]).config_json())
            config.update(img_size=args[1], window_size=require_int("window_size", window_size, 1, INT32_MAX))
            self._native = _native.encoder_from_json(json.dumps(config), args[3])
        self._init_common(mean, std, fov_mask=fov_mask)
        self.precision = precision

    @classmethod
    def from_config(cls, config, *, seed=0, mean=JSRT_MEAN, std=JSRT_STD, fov_mask=False):
        """An encoder from a config dict as `config` returns it (e.g. a Swin with its own
        embed_dim, depths, num_heads, window_size, img_size); the core validates it."""
        if not isinstance(config, dict):
            raise ACEError(f"config must be a dict, got {type(config).__name__}")
        native = _native.encoder_from_json(json.dumps(config), require_int("seed", seed, 0, UINT64_MAX))
        return cls._wrap(native, mean, std, fov_mask=fov_mask)

    @classmethod
    def _wrap(cls, native, mean=JSRT_MEAN, std=JSRT_STD, default_features="cls", fov_mask=False):
        enc = cls.__new__(cls)
        enc._native = native
        enc._init_common(mean, std, default_features, fov_mask)
        return enc

    def _init_common(self, mean, std, default_features="cls", fov_mask=False):
        # Intensity statistics: one number, or one per channel (R, G, B) of a colour encoder.
        chans = json.loads(self._native.config_json())["in_chans"]
        self.mean = _channel_setting("mean", mean, chans)
        self.std = _channel_setting("std", std, chans, positive=True)
        # Zero the pixels outside the inscribed field of view before resizing (colour fundus).
        if not isinstance(fov_mask, (bool, np.bool_)):
            raise ACEError(f"fov_mask must be true or false, got {fov_mask!r}")
        self.fov_mask = bool(fov_mask)
        # The representation the encoder's pretraining shapes: the mean of the patch tokens for
        # ACE (its losses never touch the class token), the class token for DINO-style and
        # timm-style encoders. Probes use it for features="default".
        # Shape of the last forward_train output: what backward expects (None: no pending one).
        self._pending_shape = None
        self._config = json.loads(self._native.config_json())
        self.is_swin = "depths" in self._config
        if self.is_swin:
            default_features = "mean"      # no class token
        self.default_features = default_features
        self._tensors = self._native.tensors()
        self._index = {name: i for i, (name, _) in enumerate(self._tensors)}

    # ------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path):
        """Load an encoder saved by `save` (or any safetensors file with our metadata), or the
        teacher of a training checkpoint, with that run's intensity mean/std and its method's
        `default_features` ("mean" for ACE, "cls" for DINO-style)."""
        path = require_path("path", path)
        if not os.path.isfile(path):
            raise ACEError(f"no checkpoint file at {path}")
        native = _native.load_encoder(path)   # checks the file (offsets, CRC-32) first
        return cls._wrap(native, **_run_settings(path))

    def save(self, path):
        """Write a safetensors file atomically: timm names, the config JSON and the
        preprocessing (mean, std, default_features, fov_mask) in the metadata, applied again by `load`."""
        preprocessing = {"mean": self.mean, "std": self.std, "default_features": self.default_features,
                         "fov_mask": self.fov_mask}
        self._native.save(require_path("path", path), json.dumps(preprocessing, sort_keys=True))

    def copy(self):
        """An independent encoder with the same config and weights (no optimizer state)."""
        twin = Encoder._wrap(_native.encoder_from_json(self._native.config_json()), self.mean, self.std,
                             self.default_features, self.fov_mask)
        twin.load_state_dict(self.state_dict())
        return twin

    @property
    def config(self):
        """The encoder's settings (a copy: they are fixed at construction)."""
        return dict(self._config)

    @property
    def precision(self):
        """How the matrix products run: "bf16" (bf16 operands, fp32 accumulation, oneDNN) or
        "fp32" (OpenBLAS, the exact reference). Set "auto", "bf16" or "fp32"; "auto" (the
        default) is bf16 where the CPU has AVX512-BF16 or AMX (see `ace.precision_info()`)."""
        return self._native.precision()

    @precision.setter
    def precision(self, value):
        if value not in ("auto", "bf16", "fp32"):
            raise ACEError(f"precision must be 'auto', 'bf16' or 'fp32', got {value!r}")
        self._native.set_precision(value)

    @property
    def num_params(self):
        return int(sum(np.prod(shape) for _, shape in self._tensors))

    def state_dict(self):
        """{timm name: float32 array}, copies of the current weights."""
        return {name: self._native.get_tensor(i) for i, (name, _) in enumerate(self._tensors)}

    def load_state_dict(self, state):
        """Replace every weight; names and shapes must match exactly."""
        names = set(self._index)
        missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
        if missing or unexpected:
            raise ACEError(f"state dict does not match the encoder: missing {missing}, unexpected {unexpected}")
        arrays = {}
        for name, shape in self._tensors:
            a = np.asarray(state[name])
            if a.shape != tuple(shape):
                raise ACEError(f"tensor {name!r} has shape {a.shape}, expected {tuple(shape)}")
            if a.dtype.kind != "f":
                raise ACEError(f"tensor {name!r} has dtype {a.dtype}; expected floating point")
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ACEError(f"tensor {name!r} contains NaN or infinite values")
            arrays[name] = a
        for name, a in arrays.items():
            self._native.set_tensor(self._index[name], a)

    # ------------------------------------------------------------ inference
    def forward_features(self, x):
        """x float32 (B, in_chans, H, W), already normalized -> (B, 1 + h*w, C) after the
        final norm, like timm's `forward_features`."""
        return self._forward(x, train=False)

    def forward_attention(self, x):
        """x float32 (B, in_chans, H, W), already normalized -> (B, heads, 1 + h*w): the last
        block's attention probabilities of the class token's query (each row sums to 1; the
        first key is the class token itself), from an inference forward in the encoder's
        precision, as `forward_features` computes them."""
        x = require_real_array("input", x).astype(np.float32, copy=False)
        if x.ndim != 4:
            raise ACEError(f"input must be (B, in_chans, H, W), got shape {x.shape}")
        cfg = self._config
        p = cfg["patch_size"]
        self._pending_shape = None        # the core discards a pending backward on any forward
        out = np.empty((x.shape[0], cfg["num_heads"], 1 + (x.shape[2] // p) * (x.shape[3] // p)), np.float32)
        self._native.forward_attention(np.ascontiguousarray(x), out)
        return out

    def attention(self, images, batch_size=64):
        """Images (as `embed` takes them) -> float32 (B, heads, h, w): how much the class
        token's query attends to each patch in the last block, per head (DINO's attention
        maps). The class token's attention to itself is left out, so a map sums to 1 minus it."""
        images = self._check_images(images)
        batch_size = require_int("batch_size", batch_size, 1, INT32_MAX)
        cfg = self._config
        g = cfg["img_size"] // cfg["patch_size"]
        maps = np.empty((len(images), cfg["num_heads"], g, g), np.float32)
        for start in range(0, len(images), batch_size):
            probs = self.forward_attention(self.preprocess(images[start:start + batch_size]))
            maps[start:start + len(probs)] = probs[:, :, 1:].reshape(len(probs), cfg["num_heads"], g, g)
        return maps

    def _check_images(self, images):
        images = np.asarray(images)
        if images.ndim not in (3, 4):
            raise ACEError(f"images must be (B, H, W) or (B, H, W, C), got shape {images.shape}")
        if images.shape[0] == 0:
            raise ACEError("images are an empty batch")
        check_image_size(images)
        return images

    # ------------------------------------------------------------ fine-tuning
    def forward_train(self, x):
        """As `forward_features`, in training mode (drop path on), keeping what `backward`
        needs. Any other forward on this encoder in between discards it."""
        return self._forward(x, train=True)

    def backward(self, d_features):
        """Accumulate the gradients of every weight for d loss / d output of the last
        `forward_train` (same shape as its output)."""
        d = require_real_array("d_features", d_features)
        if self._pending_shape is None:
            raise ACEError("backward needs a training forward first: call forward_train "
                           "(any other forward in between discards it)")
        if d.shape != self._pending_shape:
            raise ACEError(f"d_features must have the shape of the last forward_train output "
                           f"{self._pending_shape}, got shape {d.shape}")
        d = np.ascontiguousarray(d, dtype=np.float32)
        if not np.isfinite(d).all():
            raise ACEError("d_features contains NaN or infinite values (or values beyond float32)")
        self._native.backward(d)

    def adamw_step(self, lr, weight_decay=0.0):
        """One AdamW update (weight decay on weight matrices only) from the accumulated
        gradients, which are then reset. The moments persist across calls."""
        self._native.adamw_step(require_float("lr", lr), require_float("weight_decay", weight_decay))

    def _forward(self, x, train):
        x = require_real_array("input", x).astype(np.float32, copy=False)
        cfg = self._config
        if x.ndim != 4:
            raise ACEError(f"input must be (B, in_chans, H, W), got shape {x.shape}")
        self._pending_shape = None        # the core discards a pending backward on any forward
        if self.is_swin:
            # The core checks the input is img_size square; the output is the final grid.
            g, dim = self.token_grid, self.width
            out = np.empty((x.shape[0], g * g, dim), np.float32)
        else:
            p = cfg["patch_size"]
            h, w = x.shape[2] // p, x.shape[3] // p
            out = np.empty((x.shape[0], 1 + h * w, cfg["embed_dim"]), np.float32)
        self._native.forward_features(np.ascontiguousarray(x), out, train)
        if train:
            self._pending_shape = out.shape
        return out

    @property
    def token_grid(self):
        """Side of the token grid of an img_size input (Swin: the final stage's)."""
        cfg = self._config
        if self.is_swin:
            return cfg["img_size"] // (cfg["patch_size"] << (len(cfg["depths"]) - 1))
        return cfg["img_size"] // cfg["patch_size"]

    @property
    def width(self):
        """Width of the output tokens (Swin: embed_dim * 2^(stages - 1))."""
        cfg = self._config
        return cfg["embed_dim"] << (len(cfg["depths"]) - 1) if self.is_swin else cfg["embed_dim"]

    def preprocess(self, images):
        """uint8/uint16/float images (B, H, W) or (B, H, W, C) -> normalized float32
        (B, in_chans, img_size, img_size): the training views' pixels (the same resampler and
        per-channel statistics). Colour images go in channels last (R, G, B). The field-of-view
        mask is not applied here (images may be patches of one): see `mask_field_of_view`."""
        cfg = self._config
        x = to_channels(to_unit_float(images), cfg["in_chans"])
        x = resize(x, cfg["img_size"])
        c = cfg["in_chans"]
        return (x - channel_stats(self.mean, c, "mean")) / channel_stats(self.std, c, "std")

    def mask_field_of_view(self, images):
        """Whole images -> float32 with the pixels outside the inscribed field of view zeroed
        when the encoder's run masked them (`fov_mask`, colour fundus), else as they are (in
        [0, 1]); `ace embed` applies it to every image before `embed`."""
        return apply_fov_mask(images) if self.fov_mask else to_unit_float(images)

    def embed(self, images, batch_size=64):
        """Images -> (cls (B, C), tokens (B, h, w, C)) float32, in batches. A Swin has no class
        token: its first output is the mean of the final tokens (timm's average pool)."""
        batch_size = require_int("batch_size", batch_size, 1, INT32_MAX)
        images = self._check_images(images)
        g, dim = self.token_grid, self.width
        try:
            cls = np.empty((len(images), dim), np.float32)
            tokens = np.empty((len(images), g, g, dim), np.float32)
            for start in range(0, len(images), batch_size):
                feats = self.forward_features(self.preprocess(images[start:start + batch_size]))
                if self.is_swin:
                    cls[start:start + len(feats)] = feats.mean(axis=1)
                    tokens[start:start + len(feats)] = feats.reshape(len(feats), g, g, -1)
                else:
                    cls[start:start + len(feats)] = feats[:, 0]
                    tokens[start:start + len(feats)] = feats[:, 1:].reshape(len(feats), g, g, -1)
        except MemoryError as e:
            # NumPy and Pillow may raise it without a message.
            raise MemoryError(f"out of memory embedding images of shape {images.shape} "
                              f"({images.nbytes / 2**20:.0f} MiB as {images.dtype}) in batches of "
                              f"{batch_size}: embed fewer or smaller images, or lower batch_size") from e
        return cls, tokens

    def __repr__(self):
        c = self._config
        return (f"Encoder({c['preset']!r}, in_chans={c['in_chans']}, img_size={c['img_size']}, "
                f"params={self.num_params:,})")


def checkpoint_metadata(path):
    """The string map in a safetensors file's header (the core checked the file already)."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return f.metadata() or {}


def _run_settings(path):
    """mean, std and default_features saved with an encoder, or those of the run a training
    checkpoint comes from ({} for files without them, which keep the defaults)."""
    metadata = checkpoint_metadata(path)
    try:
        if metadata.get("format") == "ace-trainer":
            config = json.loads(metadata["config"])
            return {"mean": config["mean"], "std": config["std"], "fov_mask": config.get("fov_mask", False),
                    "default_features": "cls" if config["objective"] == "dino" else "mean"}
        if "preprocessing" in metadata:
            saved = json.loads(metadata["preprocessing"])
            return {"mean": saved["mean"], "std": saved["std"], "fov_mask": saved.get("fov_mask", False),
                    "default_features": require_choice("default_features", saved["default_features"],
                                                       ("cls", "mean"))}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ACEError(f"{path}: damaged preprocessing metadata ({e!r})") from None
    return {}


def _channel_setting(name, value, channels, positive=False):
    """A float, or a list of `channels` floats (one value per channel is kept as given)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [require_float(f"{name}[{i}]", v, positive=positive) for i, v in enumerate(value)]
        if len(values) == 1:
            return values[0]
        if len(values) != channels:
            raise ACEError(f"{name} has {len(values)} values; the encoder takes {channels} channel(s)")
        return values
    return require_float(name, value, positive=positive)

"""Export an encoder for timm: DIR/model.safetensors and DIR/config.json, the layout of a timm
model folder on the Hugging Face Hub, so that either of

    timm.create_model("local-dir:DIR", pretrained=True)
    timm.create_model("vit_tiny_patch16_224", pretrained=True, in_chans=1, num_classes=0,
                      pretrained_cfg_overlay=dict(file="DIR/model.safetensors"))

loads it (the second with the size arguments `load_commands` lists for presets timm does
not have, such as vit_nano). Neither PyTorch nor timm is needed to export.
"""
import json
import os
from pathlib import Path

from .errors import ACEError

# timm architecture of each preset and that architecture's (embed_dim, depth, num_heads).
TIMM_ARCHITECTURES = {
    "vit_nano": "vit_tiny_patch16_224",     # no timm model of its size: tiny with size arguments
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "swin_nano": "swin_tiny_patch4_window7_224",   # as vit_nano: tiny with size arguments
    "swin_tiny": "swin_tiny_patch4_window7_224",
    "swin_small": "swin_small_patch4_window7_224",
    "swin_base": "swin_base_patch4_window7_224",
    # Converted encoders of no preset's shape (ace convert): the family's model with size arguments.
    "vit_custom": "vit_tiny_patch16_224",
    "swin_custom": "swin_tiny_patch4_window7_224",
}
# The size arguments of each architecture, as timm's defaults (only differing ones are printed).
TIMM_SIZES = {"vit_tiny_patch16_224": {"embed_dim": 192, "depth": 12, "num_heads": 3},
              "vit_small_patch16_224": {"embed_dim": 384, "depth": 12, "num_heads": 6},
              "vit_base_patch16_224": {"embed_dim": 768, "depth": 12, "num_heads": 12},
              "swin_tiny_patch4_window7_224": {"embed_dim": 96, "depths": [2, 2, 6, 2],
                                               "num_heads": [3, 6, 12, 24], "window_size": 7},
              "swin_small_patch4_window7_224": {"embed_dim": 96, "depths": [2, 2, 18, 2],
                                                "num_heads": [3, 6, 12, 24], "window_size": 7},
              "swin_base_patch4_window7_224": {"embed_dim": 128, "depths": [2, 2, 18, 2],
                                               "num_heads": [4, 8, 16, 32], "window_size": 7}}


def export_timm(checkpoint, out_dir, which=None):
    """Write the encoder of `checkpoint` to out_dir/model.safetensors and out_dir/config.json.

    `which`: "teacher" (the default for a training checkpoint: the encoder ACE and DINO
    evaluate) or "student"; an encoder file holds one encoder and takes no `which`.
    Returns the config written."""
    enc, which = _pick_encoder(Path(checkpoint), which)
    config = timm_config(enc, which, str(checkpoint))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(out_dir / "model.safetensors", lambda path: _save_tensors(enc, path))
    _write_atomically(out_dir / "config.json", lambda path: path.write_text(json.dumps(config, indent=2) + "\n"))
    return config


def _pick_encoder(path, which):
    from safetensors import safe_open

    from .encoder import Encoder
    from .trainer import Trainer

    if not path.is_file():
        raise ACEError(f"no checkpoint file at {path}")
    with safe_open(str(path), framework="numpy") as f:
        is_run = (f.metadata() or {}).get("format") == "ace-trainer"
    if not is_run:
        if which is not None:
            raise ACEError(f"{path} is an encoder file (one encoder, no student or teacher): omit --which")
        return Encoder.load(path), "encoder"
    if which in (None, "teacher"):
        return Encoder.load(path), "teacher"          # loads a run's teacher
    if which == "student":
        return Trainer.load(path).student, "student"
    raise ACEError(f"which must be 'teacher' or 'student', got {which!r}")


def timm_config(enc, which, source):
    """timm's config.json for the encoder: architecture, the arguments that rebuild it, and
    the preprocessing (1 channel, the run's intensity mean/std on [0, 1] pixels, the whole
    image resized to a square). The pooled output (`model(x)` with num_classes=0) is the
    representation the encoder's method trains: the mean of the patch tokens for ACE, the
    class token for DINO-style runs."""
    c = enc.config
    size = c["img_size"]
    pool = {"mean": {"global_pool": "avg", "fc_norm": False}, "cls": {"global_pool": "token"}}[enc.default_features]
    if "depths" in c:      # Swin: no class token, its pooled output is the mean of the final tokens
        pool = {"global_pool": "avg"}
        sizes = {"depths": c["depths"], "num_heads": c["num_heads"], "window_size": c["window_size"]}
        width = c["embed_dim"] << (len(c["depths"]) - 1)
    else:
        sizes = {"depth": c["depth"], "num_heads": c["num_heads"]}
        width = c["embed_dim"]
    model_args = {"img_size": size, "patch_size": c["patch_size"], "in_chans": c["in_chans"],
                  "embed_dim": c["embed_dim"], **sizes, "mlp_ratio": float(c["mlp_ratio"]), **pool}
    return {
        "architecture": TIMM_ARCHITECTURES[c["preset"]],
        "num_classes": 0,
        "num_features": width,
        "global_pool": pool["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": f"ace_{which}", "custom_load": False, "input_size": [c["in_chans"], size, size],
            "fixed_input_size": True, "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash",
            "mean": _per_channel(enc.mean, c["in_chans"]), "std": _per_channel(enc.std, c["in_chans"]),
            "num_classes": 0, "first_conv": "patch_embed.proj", "classifier": "head",
        },
        "ace": {"preset": c["preset"], "which": which, "source": source, "default_features": enc.default_features},
    }


def load_commands(out_dir, config):
    """Python lines that load the export with timm."""
    arch, args = config["architecture"], config["model_args"]
    kwargs = {"in_chans": args["in_chans"], "num_classes": 0, "global_pool": args["global_pool"]}
    if "fc_norm" in args:
        kwargs["fc_norm"] = args["fc_norm"]
    sizes = TIMM_SIZES[arch]
    kwargs.update({key: args[key] for key in sizes if args[key] != sizes[key]})
    if args["img_size"] != 224:
        kwargs["img_size"] = args["img_size"]
    # The overlay also carries the preprocessing, for timm.data.resolve_data_config.
    pre = config["pretrained_cfg"]
    overlay = {"file": str(Path(out_dir) / "model.safetensors"), "input_size": tuple(pre["input_size"]),
               "mean": tuple(pre["mean"]), "std": tuple(pre["std"])}
    extra = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return [f"timm.create_model({'local-dir:' + str(out_dir)!r}, pretrained=True)",
            f"timm.create_model({arch!r}, pretrained=True, pretrained_cfg_overlay={overlay!r}{extra})"]


def _save_tensors(enc, path):
    from safetensors.numpy import save_file

    save_file(enc.state_dict(), str(path), metadata={"format": "pt"})


def _write_atomically(path, write):
    """write(tmp) then rename over `path`: a kill never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _per_channel(value, channels):
    """A mean/std setting (one number or one per channel) as one number per channel."""
    return list(value) if isinstance(value, list) else [value] * channels

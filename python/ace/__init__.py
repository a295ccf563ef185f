"""ACE: anatomically consistent embeddings for radiographs, with a Swift numerical core.

`import ace.data` works without the native core; the model classes load it on first use.
"""
from .config import AugmentConfig, GridConfig, PretrainConfig
from .errors import ACEError

__all__ = ["ACEError", "Encoder", "Trainer", "PretrainConfig", "GridConfig", "AugmentConfig",
           "grid_crops", "set_num_threads", "get_num_threads"]


def __getattr__(name):
    # The native extension is imported lazily so data loading and the phantom can be used
    # (and tested) on their own.
    if name == "Encoder":
        from .encoder import Encoder
        return Encoder
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    if name == "grid_crops":
        from .crops import grid_crops
        return grid_crops
    if name in ("set_num_threads", "get_num_threads"):
        from . import _native
        return getattr(_native, name)
    raise AttributeError(f"module 'ace' has no attribute {name!r}")

"""ACE: anatomically consistent embeddings for radiographs, with a Swift numerical core.

`import ace.data` works without the native core; the model classes load it on first use.
"""
from .errors import ACEError

__all__ = ["ACEError", "Encoder", "set_num_threads", "get_num_threads"]


def __getattr__(name):
    # The native extension is imported lazily so data loading and the phantom can be used
    # (and tested) on their own.
    if name == "Encoder":
        from .encoder import Encoder
        return Encoder
    if name in ("set_num_threads", "get_num_threads"):
        from . import _native
        return getattr(_native, name)
    raise AttributeError(f"module 'ace' has no attribute {name!r}")

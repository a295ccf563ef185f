"""ACE: anatomically consistent embeddings for radiographs, with a Swift numerical core.

`import ace.data` works without the native core; the model classes load it on first use.
The submodules `ace.data`, `ace.probes`, `ace.plots`, `ace.evaluate` and `ace.export` are
imported on first access, so `import ace` stays fast (no matplotlib, no scikit-learn).
"""
import importlib
import os

# oneDNN's bf16 products run on OpenMP threads; by default they spin after each product and
# take the cores from the core's own workers. Read once, when the native library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import AugmentConfig, GridConfig, PretrainConfig
from .errors import ACEError

__all__ = ["ACEError", "Encoder", "Trainer", "PretrainConfig", "GridConfig", "AugmentConfig",
           "grid_crops", "set_num_threads", "get_num_threads", "precision_info"]


def _set_num_threads(n):
    """Threads of the core's products and kernels (1...1024)."""
    from . import _native
    from .validate import require_int
    _native.set_num_threads(require_int("thread count", n, 1, 1024))


def _precision_info():
    """What precision "auto" means on this machine: {"auto": "bf16" | "fp32",
    "hardware_bf16": bool} (bf16 needs AVX512-BF16 or AMX, as oneDNN detects it)."""
    import json

    from . import _native
    return json.loads(_native.precision_info())


# Imported on first attribute access: they pull in matplotlib, scikit-learn or SciPy.
_LAZY_SUBMODULES = ("data", "probes", "plots", "evaluate", "export")


def __getattr__(name):
    # The native extension is imported lazily so data loading and the phantom can be used
    # (and tested) on their own.
    if name in _LAZY_SUBMODULES:
        from .extras import needs
        with needs(f"ace.{name}"):
            return importlib.import_module(f".{name}", __name__)
    if name == "Encoder":
        from .encoder import Encoder
        return Encoder
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    if name == "grid_crops":
        from .crops import grid_crops
        return grid_crops
    if name == "set_num_threads":
        return _set_num_threads
    if name == "get_num_threads":
        from . import _native
        return _native.get_num_threads
    if name == "precision_info":
        return _precision_info
    raise AttributeError(f"module 'ace' has no attribute {name!r}")

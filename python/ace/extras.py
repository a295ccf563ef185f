"""The optional dependencies: figures need matplotlib (the `plots` extra), the evaluation suite
and the label probes scikit-learn too (the `eval` extra). `import ace`, `ace embed`, `ace export`
and training run without them."""
import contextlib

from .errors import ACEError

# Top-level module -> (distribution to install, extra that brings it).
OPTIONAL = {"matplotlib": ("matplotlib", "plots"), "sklearn": ("scikit-learn", "eval"),
            "threadpoolctl": ("threadpoolctl", "eval")}


@contextlib.contextmanager
def needs(what):
    """Turns the import failure of an optional dependency inside the block into an ACEError
    naming `what` needs it and the extra to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        module = (e.name or "").split(".")[0]
        if module not in OPTIONAL:
            raise
        package, extra = OPTIONAL[module]
        raise ACEError(f"{what} needs {package}, which is not installed: pip install 'ace-swift[{extra}]' "
                       f"(or pip install {package})") from e

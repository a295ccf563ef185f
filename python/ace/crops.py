"""`ace.grid_crops`: the grid-wise crop sampler's output, for inspection and tests."""
import numpy as np

from . import _native
from .config import PretrainConfig
from .errors import ACEError
from .validate import UINT64_MAX, require_int, require_real_array

# Largest number of crops of one call, and largest size of the arrays it returns.
MAX_CROPS = 100_000
MAX_OUTPUT_BYTES = 2**32


def grid_crops(config=None, seed=0, n=1, image=None):
    """Sample n crops (the core's sampler, seeded by `seed`) and return a list of dicts:

    - `c1_box`, `c2_box`: (x0, y0, x1, y1) in pixels of the image resized to image_size,
      x to the right, y down, end exclusive;
    - `o1`, `o2`: bool (n_fine, n_fine) overlap masks on the C1 / C2 token grids (row = y);
    - `t_comp`: (N, N/4) targets, teacher C2 tokens x composed 2x2 blocks of C1 tokens;
    - `t_decomp`: (N, 4N) targets, teacher C1 tokens x decomposed C2 sub-tokens;
    - with `image` (image_size x image_size float32): `c1_view`, `c2_view`, the
      un-augmented views as the encoder would see them (input_size square).
    All token indices are row-major.
    """
    if config is None:
        config = PretrainConfig()
    if not isinstance(config, PretrainConfig):
        raise ACEError(f"config must be an ace.PretrainConfig, got {type(config).__name__}")
    config_json = config.to_json()       # validates the config
    seed = require_int("seed", seed, 0, UINT64_MAX)
    n = require_int("n", n, 0, MAX_CROPS)
    g = config.grid
    side = g.fine_cells
    tokens = side * side
    # The targets grow as fine_cells^4: refuse what would not fit before allocating it
    # (the core checks the geometry itself when called).
    nbytes = n * (tokens * tokens // 4 + 4 * tokens * tokens) * 4
    if nbytes > MAX_OUTPUT_BYTES:
        raise ACEError(f"n={n} crops with grid.fine_cells={side} need {nbytes / 2**30:.1f} GiB of targets "
                       f"(limit {MAX_OUTPUT_BYTES / 2**30:.0f} GiB): lower n")
    boxes = np.zeros((n, 8), np.int32)
    o1 = np.zeros((n, tokens), np.uint8)
    o2 = np.zeros((n, tokens), np.uint8)
    t_comp = np.zeros((n, tokens, tokens // 4), np.float32)
    t_decomp = np.zeros((n, tokens, 4 * tokens), np.float32)
    views1 = views2 = None
    if image is not None:
        image = np.ascontiguousarray(require_real_array("image", image), dtype=np.float32)
        if image.shape != (g.image_size, g.image_size):
            raise ACEError(f"image must be ({g.image_size}, {g.image_size}), got {image.shape}")
        views1 = np.zeros((n, g.input_size, g.input_size), np.float32)
        views2 = np.zeros_like(views1)
    _native.grid_crops(config_json, seed, n, boxes, o1, o2, t_comp, t_decomp,
                       image, views1, views2)
    out = []
    for i in range(n):
        d = {
            "c1_box": tuple(int(v) for v in boxes[i, :4]),
            "c2_box": tuple(int(v) for v in boxes[i, 4:]),
            "o1": o1[i].reshape(side, side).astype(bool),
            "o2": o2[i].reshape(side, side).astype(bool),
            "t_comp": t_comp[i],
            "t_decomp": t_decomp[i],
        }
        if image is not None:
            d["c1_view"], d["c2_view"] = views1[i], views2[i]
        out.append(d)
    return out

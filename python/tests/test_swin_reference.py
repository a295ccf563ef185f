"""Our Swin against the independent NumPy reference (reference_swin.py, float64): final tokens
to 1e-4 for a small Swin with shifted windows in three stages and for swin_tiny at 224."""
import numpy as np
import pytest

import ace
from reference_swin import swin_forward_features


def randomized(enc, rng):
    """Every weight random (LayerNorms near 1, biases and bias tables nonzero), so that every
    term of the forward shows in the output."""
    state = {}
    for name, value in enc.state_dict().items():
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
            state[name] = 1 + 0.2 * rng.standard_normal(value.shape)
        elif name.endswith("relative_position_bias_table"):
            state[name] = rng.standard_normal(value.shape)
        elif value.ndim == 1:
            state[name] = 0.1 * rng.standard_normal(value.shape)
        else:
            state[name] = rng.standard_normal(value.shape) / np.sqrt(np.prod(value.shape[1:]))
    state = {k: v.astype(np.float32) for k, v in state.items()}
    enc.load_state_dict(state)
    enc.precision = "fp32"
    return state


@pytest.mark.parametrize("preset, size, window, batch", [("swin_nano", 64, 4, 2), ("swin_tiny", 224, 7, 1)])
def test_forward_features_match_the_numpy_reference(preset, size, window, batch):
    rng = np.random.default_rng(0)
    enc = ace.Encoder(preset, img_size=size, window_size=window, seed=1)
    state = randomized(enc, rng)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    cfg = enc.config
    ref = swin_forward_features(state, x, depths=cfg["depths"], num_heads=cfg["num_heads"],
                                window_size=cfg["window_size"])
    ours = enc.forward_features(x).reshape(ref.shape)
    assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()
    # The check can fail: the same model without its shifted windows is far off.
    wrong = swin_forward_features(state, x, depths=cfg["depths"], num_heads=cfg["num_heads"],
                                  window_size=cfg["window_size"], shifts=False)
    assert np.abs(ours - wrong).max() > 1e-2

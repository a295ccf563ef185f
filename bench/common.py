"""Shared benchmark helpers: timing, the machine's matmul rates through the core's own
products, and analytic FLOP counts of the models, so every benchmark prints a ratio measured
in one run. Importable without ace (bench/torch_peer.py runs in PyTorch's environment)."""
import time

import numpy as np


def timed(fn, *, warmup_s=1.5, min_runs=3, min_s=2.0):
    """Best-of-runs seconds of fn(), after a warm-up (two-core VMs need ~1.5 s to settle)."""
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def sgemm_gflops(m=3136, n=576, k=192, precision="fp32"):
    """GFLOP/s of one (m x k) @ (k x n) product through the core's own products (ViT-shaped
    default: the qkv product of 16 vit_tiny images): OpenBLAS sgemm for "fp32", oneDNN's
    bf16 matmul with fp32 accumulation for "bf16"."""
    from ace import _native

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return 2 * m * n * k / timed(lambda: _native.gemm(a, b, False, False, precision)) / 1e9


def matmul_rates():
    """{"fp32": sgemm GFLOP/s, "bf16": bf16 matmul GFLOP/s} measured now, on a vit_tiny-batch
    sized product (6272 x 576 x 192: 32 images of 196 tokens)."""
    return {p: sgemm_gflops(6272, 576, 192, p) for p in ("fp32", "bf16")}


def vit_forward_flops(config, img_size=None):
    """Multiply-adds x 2 of ViT forward_features for one image: patch embedding, and per
    block qkv, Q K^T, P V, proj and the MLP. Norms and activations are not counted."""
    c, depth, p = config["embed_dim"], config["depth"], config["patch_size"]
    size = img_size or config["img_size"]
    n = (size // p) ** 2
    t = n + 1
    hidden = c * config["mlp_ratio"]
    patch = 2 * n * (config["in_chans"] * p * p) * c
    block = 2 * t * c * 3 * c + 2 * 2 * t * t * c + 2 * t * c * c + 2 * 2 * t * c * hidden
    return patch + depth * block


def swin_forward_flops(config):
    """Multiply-adds x 2 of Swin forward_features for one image: patch embedding, per block
    qkv, Q K^T and P V inside windows, proj and the MLP, and the patch mergings. Norms,
    activations and the bias/mask additions are not counted."""
    c0, p, w0 = config["embed_dim"], config["patch_size"], config["window_size"]
    side = config["img_size"] // p
    flops = 2 * side * side * (config["in_chans"] * p * p) * c0
    for i, depth in enumerate(config["depths"]):
        c, r = c0 << i, side >> i
        t, n = r * r, min(w0, r) ** 2
        if i > 0:
            flops += 2 * t * (2 * c) * c          # (4 C_prev = 2c) -> c per merged token
        hidden = c * config["mlp_ratio"]
        block = 2 * t * c * 3 * c + 2 * 2 * t * n * c + 2 * t * c * c + 2 * 2 * t * c * hidden
        flops += depth * block
    return flops


def forward_flops(config):
    """forward_features FLOPs of either backbone (a Swin config has `depths`)."""
    return swin_forward_flops(config) if "depths" in config else vit_forward_flops(config)


def set_threads(n):
    import ace
    ace.set_num_threads(n)

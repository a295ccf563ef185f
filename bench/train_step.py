"""Speed of the full ACE training step against the machine's own sgemm rate.

    python bench/train_step.py [--preset vit_tiny|swin_tiny|...] [--batch 16] [--objective ace] [--threads 2]
                               [--precision auto]

Prints images/s of `Trainer.step` at the default geometry (ViT: 512 px images, 224 px views;
Swin: the Swin geometry, 1024 px images, 256 px views),
the sgemm GFLOP/s measured in the same run, the fraction of that rate the step reaches
(analytic FLOPs: student forward + backward on both views, teacher forward on both views,
local heads, DINO heads), and the peak resident memory.
"""
import argparse
import os
import resource
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ace  # noqa: E402
from common import forward_flops, matmul_rates, set_threads, timed  # noqa: E402


def step_flops(cfg, encoder, batch):
    """Multiply-adds x 2 of one step; a backward pass costs twice its forward."""
    views = 2 * batch
    c = encoder.width
    encoder = forward_flops(encoder.config)
    hidden = cfg.local_hidden or 4 * c
    n = cfg.grid.fine_cells ** 2
    total = 3 * encoder * views + encoder * views           # student fwd+bwd, teacher fwd
    if "comp" in cfg.losses:
        total += 3 * batch * (n // 4) * 2 * (4 * c * hidden + hidden * c)
        total += 3 * batch * n * (n // 4) * c * 2            # cosine matrix, fwd + dz
    if "decomp" in cfg.losses:
        total += 3 * batch * n * 2 * (c * hidden + hidden * 4 * c)
        total += 3 * batch * n * (4 * n) * c * 2
    if "global" in cfg.losses or cfg.objective == "dino":
        h, b, k = cfg.head_hidden, cfg.head_bottleneck, cfg.head_prototypes
        head = 2 * (c * h + h * h + h * b + b * k)
        total += (3 + 1) * views * head
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit_tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--objective", default="ace")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    args = ap.parse_args()
    set_threads(args.threads)

    cfg = ace.PretrainConfig.recipe("paper", encoder=args.preset, batch_size=args.batch, objective=args.objective,
                                    precision=args.precision)
    trainer = ace.Trainer(cfg)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, cfg.grid.image_size, cfg.grid.image_size), dtype=np.uint8)

    rates = matmul_rates()
    t_step = timed(lambda: trainer.step(images), warmup_s=3, min_runs=3, min_s=10)
    flops = step_flops(cfg, trainer.student, args.batch)
    achieved = flops / t_step / 1e9
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rate = rates[trainer.precision]
    print(f"{args.objective} step, {args.preset}, batch {args.batch} ({2 * args.batch} views of "
          f"{cfg.grid.input_size} px), {args.threads} threads, precision {trainer.precision}")
    print(f"step:             {t_step:8.2f} s   {args.batch / t_step:6.2f} images/s   {achieved:6.1f} GFLOP/s")
    print(f"matmul rates (same run): sgemm {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f} GFLOP/s")
    print(f"fraction of the {trainer.precision} matmul rate: {achieved / rate:.2f}")
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
